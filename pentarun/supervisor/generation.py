"""One run of a worker process: spawn, handshake, the channel and output readers, dispatch.

A generation owns its process, its channel, its calls in flight and its streams. It reports
what happens (ready, exit, protocol violation, health, resource limits) to its actor as policy
events tagged with its number, so a late exit of a killed process never confuses a newer run.
Calls in flight fail with `WorkerCrashed` the moment the channel (either direction) or the
process ends; a worker whose channel ended is killed if it does not exit on its own within
`EXIT_GRACE_S`. What a worker sends is bounded before it is kept: log lines and logger names
to MAX_LINE characters, health details to MAX_HEALTH_DETAIL bytes.
"""

from __future__ import annotations

import contextlib
import logging
import signal
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import msgspec
import trio

from ..config import SupervisorConfig
from ..errors import (
    CallTimeout,
    PayloadTooLarge,
    PentarunError,
    ProtocolError,
    RemoteError,
    WorkerCrashed,
)
from ..ipc.channel import Channel, ChannelClosed
from ..ipc.messages import (
    PROTOCOL_VERSION,
    STREAM_CREDIT,
    CallParams,
    Cancel,
    ConfigUpdate,
    CoreCall,
    CoreFailure,
    CoreResult,
    EventDone,
    Failure,
    HealthProbe,
    HealthReport,
    Hello,
    HttpReply,
    Log,
    PlatformEvent,
    Reply,
    Stop,
    StreamChunk,
    StreamEnd,
    StreamStart,
    TokenRefresh,
    Welcome,
    WorkerMessage,
    call_message,
)
from ..ipc.messages import Ready as ReadyMessage
from ..packages.manifest import Resources
from ..sandbox.launcher import Launch, Sandbox, SandboxUnavailable, disk_usage
from ..sandbox.profile import Bind
from . import policy
from .events import ActorEvent, CallRefused, HealthChecked, HealthResult, Spawned
from .process import MAX_LINE, WorkerSpec, kill_now, read_lines, spawn, terminate
from .process import Spawned as SpawnedProcess
from .stats import process_usage
from .streams import StreamReply
from .telemetry import Telemetry

log = logging.getLogger(__name__)

EVENT_BACKLOG = 100  # events a worker may have unacknowledged before new ones are dropped
SUPERVISOR_LOGGER = "pentarun.supervisor"
EXIT_GRACE_S = 1.0  # a worker whose channel ended gets this long to exit before SIGKILL
MAX_HEALTH_DETAIL = 4096  # bytes of a health report's detail kept (as msgpack)
MAX_REFUSED_TEXT = 200  # characters of a worker's call name or property kept in an audit row

Answer = Reply | HttpReply | StreamReply | Failure | HealthReport


@dataclass
class _Pending:
    done: trio.Event = field(default_factory=trio.Event)
    result: Answer | None = None
    error: PentarunError | None = None


@dataclass
class Links:
    """What a generation needs from its actor (and nothing else of the runtime)."""

    key: str
    spec: WorkerSpec
    config: SupervisorConfig
    telemetry: Telemetry
    post: Callable[[policy.Event, int], None]  # (event, generation number)
    welcome: Callable[[], Welcome]  # a fresh token and the current configuration
    token_refresh: Callable[[], TokenRefresh]
    core_call: Callable[[CoreCall], Awaitable[Any]]
    emit: Callable[[ActorEvent], None]
    restarts: Callable[[], int]
    health_interval_s: float
    health_timeout_s: float
    sandbox: Sandbox | None  # None: `security.sandbox = "off"`
    resources: Resources
    check_tree: Callable[[Path], Awaitable[str]] | None
    extra_env: dict[str, str]
    extra_binds: tuple[Bind, ...]


class Generation:
    def __init__(self, number: int, links: Links) -> None:
        self.number = number
        self.links = links
        self.spawned: SpawnedProcess | None = None
        self.channel: Channel[WorkerMessage] | None = None
        self.hello: Hello | None = None
        self.ready = False
        self.gone = False  # the channel or the process ended: no new call may be sent
        self.pending: dict[int, _Pending] = {}
        self.streams: dict[int, trio.MemorySendChannel[bytes | StreamEnd]] = {}
        self.core_calls = 0
        self.started_at = time.time()
        self.spawn_started = trio.current_time()
        self.ready_after_s: float | None = None
        self.ended = trio.Event()
        self.kill_requested = False
        self.events_in_flight: set[int] = set()
        self._ids = iter(range(1, 2**62))
        self._nursery: trio.Nursery | None = None

    @property
    def pid(self) -> int | None:
        return self.spawned.process.pid if self.spawned else None

    def _post(self, event: policy.Event) -> None:
        self.links.post(event, self.number)

    def _log(self, level: str, message: str) -> None:
        self.links.telemetry.add_log(level, SUPERVISOR_LOGGER, message)

    @property
    def serving(self) -> bool:
        """Ready, and neither its channel nor its process has ended."""
        channel = self.channel
        return self.ready and not self.gone and channel is not None and not channel.closed

    def _send(self, message: Any) -> bool:
        """Send unless the channel is over; never raises (an oversized frame is logged)."""
        if self.channel is None:
            return False
        try:
            return self.channel.send_if_open(message)
        except ProtocolError as exc:
            self._log("ERROR", f"could not send {type(message).__name__}: {exc}")
            return False

    def fail_pending(self, error: PentarunError) -> None:
        self.gone = True
        for slot in self.pending.values():
            slot.error = error
            slot.done.set()
        self.pending.clear()
        for stream in self.streams.values():
            stream.close()  # the client's response ends where the worker died
        self.streams.clear()

    # --- calls into the worker ------------------------------------------------------------

    async def call(
        self, handler: str, property_id: str, params: CallParams, timeout_s: float
    ) -> Reply | HttpReply | StreamReply:
        channel = self.channel
        if channel is None or self.gone or channel.closed:
            self.gone = True
            raise WorkerCrashed(f"plugin {self.links.key!r} worker has gone", {"delivered": False})
        call_id = next(self._ids)
        slot = self.pending[call_id] = _Pending()
        self.links.telemetry.note_call(handler, property_id)
        deadline_ms = max(1, int(timeout_s * 1000))
        try:
            channel.send(call_message(call_id, handler, property_id, params, deadline_ms))
        except ChannelClosed:
            self.pending.pop(call_id, None)
            self.gone = True
            raise WorkerCrashed(
                f"plugin {self.links.key!r} worker channel is closed", {"delivered": False}
            ) from None
        except ProtocolError:  # our own frame: the call's parameters are too large to send
            self.pending.pop(call_id, None)
            raise PayloadTooLarge(
                "the call's parameters exceed the IPC frame limit",
                {"max_frame_bytes": self.links.config.max_frame_bytes},
            ) from None
        with trio.move_on_after(timeout_s):
            await slot.done.wait()
        if not slot.done.is_set():
            self.pending.pop(call_id, None)
            self._send(Cancel(call_id))
            raise CallTimeout(
                f"plugin {self.links.key!r} did not answer {handler!r} in {timeout_s:g} s"
            )
        if slot.error is not None:
            raise slot.error
        result = slot.result
        if isinstance(result, Failure):
            raise RemoteError(result.code, result.message, result.status)
        assert isinstance(result, Reply | HttpReply | StreamReply)
        return result

    async def probe(self) -> HealthResult:
        timeout = self.links.health_timeout_s
        call_id = next(self._ids)
        slot = self.pending[call_id] = _Pending()
        started = trio.current_time()
        if self._send(HealthProbe(call_id)):
            with trio.move_on_after(timeout):
                await slot.done.wait()
        self.pending.pop(call_id, None)
        report = slot.result
        ok = isinstance(report, HealthReport) and report.ok
        error = ""
        if not ok:
            error = (
                f"no answer within {timeout:g} s"
                if not slot.done.is_set()
                else "worker reported unhealthy"
            )
        return HealthResult(
            ok=ok,
            at=time.time(),
            latency_ms=(trio.current_time() - started) * 1000,
            detail=_bounded(report.detail) if isinstance(report, HealthReport) else {},
            error=error,
        )

    def deliver(
        self, event_type: str, property_id: str, data: dict[str, Any]
    ) -> Literal["sent", "closed", "backlog"]:
        """Send an event unless EVENT_BACKLOG of them are unacknowledged (then drop it)."""
        if self.channel is None or not self.ready:
            return "closed"
        if len(self.events_in_flight) >= EVENT_BACKLOG:
            return "backlog"
        event_id = next(self._ids)
        if not self._send(PlatformEvent(event_id, event_type, property_id, data, time.time())):
            return "closed"
        self.events_in_flight.add(event_id)
        return "sent"

    def send(self, message: ConfigUpdate | TokenRefresh) -> None:
        """Push to a worker that completed its hello (new workers get it in Welcome)."""
        if self.hello is not None:
            self._send(message)

    def usage_sample(self) -> tuple[float, int] | None:
        """(CPU seconds, memory bytes) of the worker: its whole cgroup when sandboxed (the
        process we started is bubblewrap's), else its process."""
        spawned = self.spawned
        if spawned is None or self.ended.is_set():
            return None
        if spawned.launch is None:
            return process_usage(spawned.process.pid)
        group = spawned.launch.cgroup
        cpu, memory = group.cpu_seconds(), group.memory_bytes()
        return None if cpu is None or memory is None else (cpu, memory)

    def limits_hit(self) -> dict[str, int | None]:
        """How often the sandbox's limits held the worker back: forks its process limit
        refused and CPU periods its quota throttled (None unsandboxed: not enforced)."""
        spawned = self.spawned
        if spawned is None or spawned.launch is None or self.ended.is_set():
            return {"forks_refused": None, "cpu_throttled_periods": None}
        group = spawned.launch.cgroup
        return {"forks_refused": group.pids_refused(), "cpu_throttled_periods": group.throttled()}

    def kill(self) -> None:
        if self.spawned is not None:
            kill_now(self.spawned.process)

    async def stop(self, graceful: bool) -> None:
        spawned = self.spawned
        if spawned is None:  # still spawning: run() kills it once it exists
            self.kill_requested = True
            return
        if not graceful:
            kill_now(spawned.process)
            return

        def request_stop() -> None:
            self._send(Stop("stop requested by supervisor"))

        group = spawned.launch.cgroup.signal_all if spawned.launch is not None else None
        await terminate(spawned.process, request_stop, self.links.config.stop_timeout_s, group)

    # --- the run ----------------------------------------------------------------------------

    async def run(self) -> None:
        links, config = self.links, self.links.config
        if links.check_tree is not None:
            refusal = await links.check_tree(links.spec.root)
            if refusal:  # nothing of a tampered tree runs
                links.telemetry.last_exit = f"not started: {refusal}"
                self._log("ERROR", links.telemetry.last_exit)
                self._post(policy.IntegrityFailed(refusal))
                return
        try:
            self.spawned = await spawn(
                links.spec,
                config.max_frame_bytes,
                links.sandbox,
                resources=links.resources,
                extra_env=links.extra_env,
                extra_binds=links.extra_binds,
            )
        except SandboxUnavailable as exc:  # fail closed: nothing runs unprotected
            links.telemetry.last_exit = f"not started: sandbox unavailable: {exc}"
            self._log("ERROR", links.telemetry.last_exit)
            self._post(policy.StartRefused(f"sandbox unavailable: {exc}"))
            return
        except OSError as exc:
            links.telemetry.last_exit = f"could not be started: {exc}"
            self._log("ERROR", links.telemetry.last_exit)
            self._post(policy.Exited(code=None))
            return
        process = self.spawned.process
        if self.kill_requested:
            kill_now(process)
        links.emit(Spawned(links.key, process.pid, self.number, links.restarts()))
        self.channel = Channel(self.spawned.channel_stream, WorkerMessage, config.max_frame_bytes)
        channel_done, output_done = trio.Event(), trio.Event()
        try:
            async with trio.open_nursery() as nursery:
                self._nursery = nursery
                nursery.start_soon(self._read_channel, channel_done)
                nursery.start_soon(self._read_output, output_done)
                nursery.start_soon(self._startup_deadline)
                nursery.start_soon(self._health_loop)
                nursery.start_soon(self._token_refresh_loop)
                if links.spec.memory_limit_mb is not None and self.spawned.launch is None:
                    # sandboxed, the kernel enforces it (cgroup); unsandboxed, this watch does
                    nursery.start_soon(self._memory_watch, links.spec.memory_limit_mb)
                if self.spawned.launch is not None:
                    nursery.start_soon(self._limits_watch, self.spawned.launch)
                    nursery.start_soon(self._storage_watch, self.spawned.launch)
                await process.wait()
                if self.spawned.launch is not None:
                    # the sandbox's outer process is gone, so is the worker: everything left
                    # in its cgroup dies now (a live inner process would hold the channel open)
                    await trio.to_thread.run_sync(self.spawned.launch.cgroup.kill_all)
                self.fail_pending(WorkerCrashed(f"plugin {links.key!r} worker exited"))
                with trio.move_on_after(1.0):  # collect the last frames and output lines
                    await channel_done.wait()
                    await output_done.wait()
                nursery.cancel_scope.cancel()
        finally:
            kill_now(process)
            with trio.CancelScope(shield=True), trio.move_on_after(10):
                await process.wait()  # reap it, even when the supervisor is being cancelled
                await self.spawned.output.aclose()
                await self.spawned.channel_stream.aclose()
                launch = self.spawned.launch
                if launch is not None:  # every process it started dies with it
                    oom = launch.cgroup.oom_kills() > launch.cgroup.oom_kills_at_start
                    await trio.to_thread.run_sync(launch.release)
                    if oom:
                        limit = links.resources.memory_limit
                        detail = f"the kernel killed it at its memory_limit of {limit} MB"
                        self._log("ERROR", f"memory limit exceeded: {detail}")
                        self._post(policy.ResourceExceeded(detail))
            self.ended.set()
        code = process.returncode
        assert code is not None
        exited = policy.Exited(code=code) if code >= 0 else policy.Exited(signal=-code)
        last_exit = policy.describe_exit(exited)
        if code < 0:
            last_exit += f" ({signal.Signals(-code).name})"
        links.telemetry.last_exit = last_exit
        self._post(exited)

    async def _read_channel(self, done: trio.Event) -> None:
        assert self.channel is not None and self._nursery is not None
        try:
            await self.channel.run(self._on_message)
        except* ProtocolError as group:
            detail = str(group.exceptions[0])
            self._log("ERROR", f"protocol violation: {detail}")
            self._post(policy.ProtocolViolation(detail))
        finally:
            self.fail_pending(WorkerCrashed(f"plugin {self.links.key!r} worker channel closed"))
            done.set()
        self._nursery.start_soon(self._reap_after_channel)

    async def _reap_after_channel(self) -> None:
        """A worker without a channel is of no use: it exits now, or it is killed."""
        assert self.spawned is not None
        with trio.move_on_after(EXIT_GRACE_S):
            await self.spawned.process.wait()
            return
        self._log("ERROR", f"the channel ended and the worker did not exit in {EXIT_GRACE_S:g} s")
        kill_now(self.spawned.process)

    async def _read_output(self, done: trio.Event) -> None:
        assert self.spawned is not None
        telemetry = self.links.telemetry
        try:
            await read_lines(
                self.spawned.output, lambda line: telemetry.add_log("OUTPUT", "stdout", line)
            )
        finally:
            done.set()

    async def _startup_deadline(self) -> None:
        await trio.sleep(self.links.config.startup_timeout_s)
        if not self.ready:
            self._log("ERROR", "no handshake before the deadline")
            self._post(policy.StartupTimeout())

    async def _health_loop(self) -> None:
        while True:
            await trio.sleep(self.links.health_interval_s)
            if not self.ready:
                continue
            result = await self.probe()
            self._post(policy.HealthOk() if result.ok else policy.HealthFailed(result.error))
            self.links.emit(HealthChecked(self.links.key, result))

    async def _memory_watch(self, limit_mb: int) -> None:
        while True:
            await trio.sleep(self.links.config.memory_check_s)
            usage = process_usage(self.pid) if self.pid is not None else None
            if usage is not None and usage[1] > limit_mb * 2**20:
                detail = f"{usage[1] / 2**20:.0f} MB resident, memory_limit is {limit_mb} MB"
                self._log("ERROR", f"memory limit exceeded: {detail}")
                self._post(policy.ResourceExceeded(detail))
                return

    async def _limits_watch(self, launch: Launch) -> None:
        """Record in the worker's log when its process limit refused forks or its CPU quota
        throttled it (the kernel enforces both; memory is recorded when it kills)."""
        group, resources = launch.cgroup, self.links.resources
        refused = throttled = 0
        while True:
            await trio.sleep(self.links.config.memory_check_s)
            now_refused, now_throttled = await trio.to_thread.run_sync(
                lambda: (group.pids_refused(), group.throttled())
            )
            if now_refused > refused:
                self._log(
                    "WARNING",
                    f"process limit: {now_refused - refused} fork(s) refused "
                    f"(resources.max_processes is {resources.max_processes})",
                )
            if now_throttled > throttled and throttled == 0:  # once: it goes on as it runs
                self._log(
                    "WARNING",
                    f"CPU quota: throttled to resources.cpu_limit = {resources.cpu_limit:g} CPUs",
                )
            refused, throttled = now_refused, now_throttled

    async def _storage_watch(self, launch: Launch) -> None:
        """A worker whose private /data grows past its bound is stopped, as over any limit
        (the rule is recorded; a plugin that keeps doing it ends in a crash loop)."""
        limit = launch.data_limit
        while True:
            await trio.sleep(self.links.config.storage_check_s)
            used = await trio.to_thread.run_sync(disk_usage, launch.data_dir, limit)
            if used > limit:
                detail = f"its /data holds over {limit // 2**20} MB (security.sandbox_data_mb)"
                self._log("ERROR", f"storage limit exceeded: {detail}")
                self._post(policy.ResourceExceeded(f"storage: {detail}"))
                return

    async def _token_refresh_loop(self) -> None:
        while True:
            await trio.sleep(self.links.config.token_ttl_s * 2 / 3)
            self.send(self.links.token_refresh())

    # --- messages from the worker -----------------------------------------------------------

    def _on_message(self, message: WorkerMessage) -> None:
        if self.hello is None and not isinstance(message, Hello):
            raise ProtocolError(f"expected hello first, got {type(message).__name__}")
        match message:
            case Reply() | HttpReply() | Failure() | HealthReport():
                slot = self.pending.pop(message.id, None)
                if slot is not None:  # a late answer to a call that timed out is dropped
                    slot.result = message
                    slot.done.set()
            case StreamStart():
                self._on_stream_start(message)
            case EventDone(id=event_id):
                self.events_in_flight.discard(event_id)
            case StreamChunk(id=stream_id, data=data):
                sink = self.streams.get(stream_id)
                if sink is not None:
                    try:
                        sink.send_nowait(data)
                    except trio.WouldBlock:
                        raise ProtocolError(f"stream {stream_id} sent beyond its credit") from None
                    except trio.BrokenResourceError:  # the client left; cancel is on its way
                        self.streams.pop(stream_id, None)
            case StreamEnd(id=stream_id):
                sink = self.streams.pop(stream_id, None)
                if sink is not None:
                    with contextlib.suppress(trio.WouldBlock, trio.BrokenResourceError):
                        sink.send_nowait(message)
                    sink.close()
            case CoreCall():
                self._on_core_call(message)
            case Log():
                self._on_log(message)
            case Hello():
                self._on_hello(message)
            case ReadyMessage():
                if self.ready:
                    raise ProtocolError("ready sent twice")
                self.ready = True
                self.ready_after_s = trio.current_time() - self.spawn_started
                self._post(policy.Ready())

    def _on_log(self, record: Log) -> None:
        if not self.links.telemetry.admit_record(trio.current_time()):
            return  # over log_records_per_s: counted, reported once a second
        # records a plugin emits while serving a call are the caller's doing: they do not feed
        # the error-storm rule (an outside client must not be able to quarantine a plugin)
        if record.level >= logging.ERROR and not record.in_call:
            self._post(policy.ErrorLogged())
        self.links.telemetry.add_log(
            logging.getLevelName(record.level)[:MAX_LINE],
            record.logger[:MAX_LINE],
            record.message[:MAX_LINE],
        )

    def _on_stream_start(self, start: StreamStart) -> None:
        slot = self.pending.pop(start.id, None)
        channel = self.channel
        assert channel is not None
        if slot is None:  # the caller gave up before the stream began
            self._send(Cancel(start.id))
            return
        sink, source = trio.open_memory_channel[bytes | StreamEnd](STREAM_CREDIT + 1)
        self.streams[start.id] = sink

        def send(message: object) -> bool:
            if isinstance(message, Cancel):
                self.streams.pop(start.id, None)
            return self._send(message)

        slot.result = StreamReply(start, source, send)
        slot.done.set()

    def _on_hello(self, hello: Hello) -> None:
        if self.hello is not None:
            raise ProtocolError("hello sent twice")
        if hello.protocol != PROTOCOL_VERSION:
            raise ProtocolError(
                f"worker speaks protocol {hello.protocol}, the core speaks {PROTOCOL_VERSION}"
            )
        self.hello = hello
        self._send(self.links.welcome())

    def _on_core_call(self, call: CoreCall) -> None:
        assert self._nursery is not None and self.channel is not None
        limit = self.links.config.max_in_flight
        if self.core_calls >= limit:
            message = f"too many core calls in flight (limit {limit})"
            self._send(CoreFailure(call.id, "busy", message, 429))
            name, prop = call.name[:MAX_REFUSED_TEXT], call.property[:MAX_REFUSED_TEXT]
            self.links.emit(CallRefused(self.links.key, "core_call", name, prop, "busy", message))
            return
        self.core_calls += 1
        self._nursery.start_soon(self._serve_core_call, call)

    async def _serve_core_call(self, call: CoreCall) -> None:
        assert self.channel is not None
        reply: CoreResult | CoreFailure
        try:
            with trio.fail_after(self.links.config.call_timeout_s):
                value = await self.links.core_call(call)
            reply = CoreResult(call.id, value)
        except PentarunError as exc:
            reply = CoreFailure(
                call.id, exc.error_code, exc.message, exc.http_status, dict(exc.details)
            )
        except trio.TooSlowError:
            reply = CoreFailure(call.id, "call_timeout", f"core call {call.name!r} timed out", 504)
        except Exception as exc:
            log.exception("core call %s from %s failed", call.name, self.links.key)
            reply = CoreFailure(call.id, "internal_error", f"{type(exc).__name__}", 500)
        finally:
            self.core_calls -= 1
        if not self._send(reply) and isinstance(reply, CoreResult):
            too_large = "the core's answer exceeds the IPC frame limit"
            self._send(CoreFailure(call.id, "too_large", too_large, 413))


def _bounded(detail: dict[str, Any]) -> dict[str, Any]:
    """A health report's detail, or a note of its size when it is too large to keep."""
    size = len(msgspec.msgpack.encode(detail))
    return detail if size <= MAX_HEALTH_DETAIL else {"truncated": True, "bytes": size}
