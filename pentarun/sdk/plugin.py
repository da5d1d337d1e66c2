"""`Plugin`: the registry of a worker's callbacks and the worker side of the IPC protocol.

`plugin.run()` reads the channel fd from `PENTARUN_IPC_FD`, points fd 1 at stderr (so `print()`
never reaches the channel), sends Hello, waits for Welcome, runs on_start, sends Ready, then
serves Calls and HealthProbes concurrently. Python `logging` records travel to the supervisor.
The worker exits when the core sends Stop or closes the channel.

A handler's uncaught exception is the caller's failure: the Call is answered with a 500
`handler_error` Failure, and every record logged while serving a Call (in the handler's task, or
in tasks and threads it starts with trio, which copy its context) is marked `Log.in_call`, so
it does not feed the supervisor's error-storm rule. Records logged outside calls (start-up,
stop, events, configuration, health, threads the plugin starts itself) are not, and do count.
"""

from __future__ import annotations

import contextlib
import contextvars
import logging
import math
import os
import socket
import sys
import traceback
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import trio

from ..ipc.channel import Channel
from ..ipc.codec import DEFAULT_MAX_FRAME
from ..ipc.env import IPC_FD_ENV, MAX_FRAME_ENV
from ..ipc.messages import (
    PROTOCOL_VERSION,
    STREAM_CREDIT,
    Call,
    Cancel,
    ConfigUpdate,
    CoreCall,
    CoreFailure,
    CoreMessage,
    CoreResult,
    EventDone,
    Failure,
    HealthProbe,
    HealthReport,
    Hello,
    HttpReply,
    Log,
    PlatformEvent,
    Ready,
    Reply,
    Stop,
    StreamChunk,
    StreamCredit,
    StreamEnd,
    StreamStart,
    TokenRefresh,
    Welcome,
)
from . import egress
from .context import Context
from .types import Error, Response, Stream

Handler = Callable[[Context, dict[str, Any]], Awaitable[Any]]
HealthCheck = Callable[[Context], Awaitable[dict[str, Any]]]
Lifecycle = Callable[[Context], Awaitable[None]]
EventHandler = Callable[[Context, dict[str, Any]], Awaitable[None]]
F = TypeVar("F", bound=Callable[..., Any])

log = logging.getLogger("pentarun.sdk")

# The egress relay and the proxy variables, before plugin code builds an HTTP client: this
# module is imported by `import pentarun.sdk` (sdk/egress.py; nothing without an egress socket)
egress.ensure_relay()

# the id of the Call whose handler runs in this context (None outside calls): records logged
# here are marked `in_call`
_serving_call: contextvars.ContextVar[int | None] = contextvars.ContextVar(
    "pentarun_serving_call", default=None
)


LIFECYCLE = ("approved", "activated", "deactivated", "reloaded", "revoked")


class CoreCallError(Error):
    """The core refused or failed a `ctx.core.call`; `details` are the core's (e.g. for
    `storage_full`: `used` and `limit` in bytes)."""

    def __init__(
        self, code: str, message: str = "", status: int = 400, details: dict[str, Any] | None = None
    ) -> None:
        super().__init__(code, message, status)
        self.details = details or {}


class Plugin:
    def __init__(self) -> None:
        self.handlers: dict[str, Handler] = {}
        self._health: HealthCheck | None = None
        self._on_start: list[Lifecycle] = []
        self._on_stop: list[Lifecycle] = []
        self._on_config: list[Lifecycle] = []
        self._on_event: dict[str, list[EventHandler]] = {}

    # --- registration -----------------------------------------------------------------------

    def handler(self, name: str) -> Callable[[F], F]:
        def register(fn: F) -> F:
            if name in self.handlers:
                raise ValueError(f"handler {name!r} registered twice")
            self.handlers[name] = fn
            return fn

        return register

    def health(self, fn: HealthCheck) -> HealthCheck:
        self._health = fn
        return fn

    def on_start(self, fn: Lifecycle) -> Lifecycle:
        self._on_start.append(fn)
        return fn

    def on_stop(self, fn: Lifecycle) -> Lifecycle:
        self._on_stop.append(fn)
        return fn

    def on_event(self, event_type: str) -> Callable[[F], F]:
        """`@plugin.on_event("camera.motion")`: `async def f(ctx, event)`, ctx for its property."""

        def register(fn: F) -> F:
            self._on_event.setdefault(event_type, []).append(fn)
            return fn

        return register

    def on_lifecycle(self, name: str) -> Callable[[F], F]:
        """`@plugin.on_lifecycle("activated")`: `async def f(ctx, event)` when the core tells
        the plugin what happened to it: approved, activated or deactivated (for
        `event["property"]`), reloaded (a new version runs), revoked (quarantined or
        uninstalled; the worker stops right after). `event["detail"]` says more."""
        if name not in LIFECYCLE:
            raise ValueError(f"lifecycle notifications are {', '.join(LIFECYCLE)}, not {name!r}")
        return self.on_event(f"lifecycle.{name}")

    def hook(self, name: str) -> Callable[[F], F]:
        """`@plugin.hook("snapshot.annotate")`: `async def f(ctx, payload) -> dict | None`; the
        dict's fields replace the payload's. Declare the hook in the manifest's `hooks`."""
        return self.handler(f"hook:{name}")

    def on_config(self, fn: Lifecycle) -> Lifecycle:
        """Called when the operator changes the configuration; `ctx.config` is the new one."""
        self._on_config.append(fn)
        return fn

    # --- running ----------------------------------------------------------------------------

    def run(self) -> None:
        """Entry point of a worker process started by the supervisor."""
        fd_text = os.environ.get(IPC_FD_ENV)
        if fd_text is None:
            sys.exit(f"{IPC_FD_ENV} is not set: workers are started by the pentarun supervisor")
        max_frame = int(os.environ.get(MAX_FRAME_ENV, DEFAULT_MAX_FRAME))
        egress.ensure_relay()  # started at import already, unless the environment came later
        os.dup2(2, 1)  # print() goes to stderr, never to the channel
        sock = socket.socket(fileno=int(fd_text))
        trio.run(_Worker(self, max_frame).serve, sock)


class _Worker:
    """One worker process's connection to the core."""

    def __init__(self, plugin: Plugin, max_frame: int) -> None:
        self.plugin = plugin
        self.max_frame = max_frame
        self.token = ""
        self.config: dict[str, Any] = {}
        self._welcome = trio.Event()
        self._stop = trio.Event()
        self._next_id = 0
        self._core_pending: dict[int, tuple[trio.Event, list[CoreResult | CoreFailure]]] = {}
        self._calls: dict[int, trio.CancelScope] = {}
        self._credits: dict[int, trio.Semaphore] = {}
        self._nursery: trio.Nursery | None = None
        self._channel: Channel[CoreMessage] | None = None

    async def serve(self, sock: socket.socket) -> None:
        stream = trio.SocketStream(trio.socket.from_stdlib_socket(sock))
        channel: Channel[CoreMessage] = Channel(stream, CoreMessage, self.max_frame)
        self._channel = channel
        handler = _ForwardingHandler(channel, trio.lowlevel.current_trio_token())
        logging.getLogger().addHandler(handler)
        if logging.getLogger().level > logging.INFO or logging.getLogger().level == 0:
            logging.getLogger().setLevel(logging.INFO)
        try:
            async with trio.open_nursery() as nursery:
                self._nursery = nursery
                channel.send(
                    Hello(
                        protocol=PROTOCOL_VERSION,
                        pid=os.getpid(),
                        handlers=sorted(self.plugin.handlers),
                        events=sorted(self.plugin._on_event),
                        sdk="pentarun-python/1",
                    )
                )
                nursery.start_soon(self._lifecycle, nursery)
                await channel.run(self._dispatch)
                nursery.cancel_scope.cancel()  # the core closed the channel: exit
        finally:
            logging.getLogger().removeHandler(handler)

    async def _lifecycle(self, nursery: trio.Nursery) -> None:
        await self._welcome.wait()
        ctx = self._context("")
        for fn in self.plugin._on_start:
            await fn(ctx)
        self._send(Ready())
        await self._stop.wait()
        with trio.move_on_after(10):
            for fn in self.plugin._on_stop:
                await fn(ctx)
        nursery.cancel_scope.cancel()

    def _send(self, message: Any) -> None:
        assert self._channel is not None
        self._channel.send_if_open(message)

    def _dispatch(self, message: CoreMessage) -> None:
        assert self._nursery is not None
        match message:
            case Call():
                self._nursery.start_soon(self._call, message)
            case HealthProbe():
                self._nursery.start_soon(self._health, message)
            case CoreResult() | CoreFailure():
                waiter = self._core_pending.pop(message.id, None)
                if waiter is not None:
                    waiter[1].append(message)
                    waiter[0].set()
            case Cancel():
                scope = self._calls.get(message.id)
                if scope is not None:
                    scope.cancel()
            case StreamCredit(id=stream_id, n=n):
                credit = self._credits.get(stream_id)
                if credit is not None:
                    for _ in range(min(n, STREAM_CREDIT - credit.value)):
                        credit.release()
            case Welcome():
                self.token, self.config = message.token, message.config
                self._welcome.set()
            case TokenRefresh():
                self.token = message.token
            case PlatformEvent():
                self._nursery.start_soon(self._event, message)
            case ConfigUpdate(config=config):
                self.config = config
                self._nursery.start_soon(self._config_changed)
            case Stop():
                self._stop.set()

    async def _event(self, event: PlatformEvent) -> None:
        ctx = self._context(event.property)
        body = {
            "id": event.id,
            "type": event.type_,
            "property": event.property,
            "data": event.data,
            "at": event.at,
        }
        if event.type_.startswith("lifecycle."):  # {"event", "property", "detail"}
            body = dict(event.data)
        for fn in self.plugin._on_event.get(event.type_, []):
            try:
                await fn(ctx, body)
            except Exception:
                log.error("on_event %s failed:\n%s", event.type_, traceback.format_exc())
        self._send(EventDone(event.id))

    async def _config_changed(self) -> None:
        ctx = self._context("")
        for fn in self.plugin._on_config:
            try:
                await fn(ctx)
            except Exception:
                log.error("on_config failed:\n%s", traceback.format_exc())

    def _context(self, property_id: str) -> Context:
        return Context(property_id, self._core_call, self.config)

    async def _core_call(self, property_id: str, name: str, params: dict[str, Any]) -> Any:
        self._next_id += 1
        call_id = self._next_id
        done = trio.Event()
        slot: list[CoreResult | CoreFailure] = []
        self._core_pending[call_id] = (done, slot)
        try:
            self._send(
                CoreCall(
                    id=call_id, token=self.token, property=property_id, name=name, params=params
                )
            )
            await done.wait()
        finally:
            self._core_pending.pop(call_id, None)
        result = slot[0]
        if isinstance(result, CoreFailure):
            raise CoreCallError(result.code, result.message, result.status, result.details)
        return result.value

    async def _call(self, call: Call) -> None:
        _serving_call.set(call.id)  # this task's own context: it ends with the call
        fn = self.plugin.handlers.get(call.handler)
        if fn is None:
            self._send(Failure(call.id, "unknown_handler", f"no handler {call.handler!r}", 404))
            return
        with trio.CancelScope() as scope:
            self._calls[call.id] = scope
            if call.deadline_ms > 0:
                scope.deadline = trio.current_time() + call.deadline_ms / 1000
            try:
                params = call.params if call.http is None else call.http.handler_params()
                result = await fn(self._context(call.property), params)
            except Error as exc:
                self._send(Failure(call.id, exc.code, exc.message, exc.status))
            except Exception as exc:
                log.error("handler %s failed:\n%s", call.handler, traceback.format_exc())
                self._send(Failure(call.id, "handler_error", f"{type(exc).__name__}: {exc}", 500))
            else:
                if isinstance(result, Stream):
                    scope.deadline = math.inf  # the deadline covered the start only
                    await self._stream(call.id, result)
                else:
                    self._reply(call.id, result)
            finally:
                del self._calls[call.id]
                self._credits.pop(call.id, None)

    async def _stream(self, call_id: int, stream: Stream) -> None:
        credit = self._credits[call_id] = trio.Semaphore(STREAM_CREDIT, max_value=STREAM_CREDIT)
        self._send(StreamStart(call_id, stream.status, stream.content_type, stream.headers))
        error = ""
        try:
            async for chunk in stream.chunks:
                await credit.acquire()
                self._send(StreamChunk(call_id, bytes(chunk)))
        except Exception as exc:
            log.error("stream %d failed:\n%s", call_id, traceback.format_exc())
            error = f"{type(exc).__name__}: {exc}"
        finally:
            aclose = getattr(stream.chunks, "aclose", None)
            if aclose is not None:
                with trio.CancelScope(shield=True):
                    await aclose()
            self._send(StreamEnd(call_id, error))

    def _reply(self, call_id: int, result: Any) -> None:
        if isinstance(result, Response):
            message: Any = HttpReply(
                call_id, result.status, result.body_bytes, result.content_type, result.headers
            )
        else:
            message = Reply(call_id, result)
        assert self._channel is not None
        try:
            self._channel.send_if_open(message)
        except Exception as exc:  # unencodable or oversized result
            self._send(Failure(call_id, "bad_reply", f"reply cannot be sent: {exc}", 500))

    async def _health(self, probe: HealthProbe) -> None:
        check = self.plugin._health
        try:
            detail = await check(self._context("")) if check else {"ok": True}
            ok = bool(detail.get("ok", True))
        except Exception as exc:
            detail, ok = {"error": f"{type(exc).__name__}: {exc}"}, False
        self._send(HealthReport(probe.id, ok, detail))


class _ForwardingHandler(logging.Handler):
    """Sends log records to the supervisor; safe from any thread."""

    def __init__(self, channel: Channel[CoreMessage], token: trio.lowlevel.TrioToken) -> None:
        super().__init__(logging.DEBUG)
        self._channel = channel
        self._token = token

    def emit(self, record: logging.LogRecord) -> None:
        if record.name.startswith("trio"):
            return
        in_call = _serving_call.get() is not None
        message = Log(record.levelno, record.name, self.format(record), record.created, in_call)
        with contextlib.suppress(trio.RunFinishedError):
            self._token.run_sync_soon(self._channel.send_if_open, message)
