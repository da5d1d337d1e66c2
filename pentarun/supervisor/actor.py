"""One actor per plugin worker: it owns the process, its channel, the mailbox and the policy.

Everything that happens (operator requests, process exits, handshake, health results, ERROR
logs, timers) becomes a policy event on the actor's inbox; one task feeds them to
`Policy.step` and carries out the commands. Events from an older worker generation are
dropped, so a late exit of a killed process never confuses the current one.

The mailbox (`call`) gives every call a deadline, bounds calls in flight (`Busy` beyond
`max_in_flight`), refuses at once while the worker is not RUNNING, and fails calls in flight
with `WorkerCrashed` the moment the worker's channel or process ends.
"""

from __future__ import annotations

import collections
import contextlib
import itertools
import logging
import random
import signal
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import msgspec
import trio

from ..config import SupervisorConfig
from ..errors import (
    Busy,
    CallTimeout,
    PentarunError,
    PropertyNotAssigned,
    ProtocolError,
    RemoteError,
    WorkerCrashed,
    WorkerUnavailable,
)
from ..ipc.channel import Channel, ChannelClosed
from ..ipc.messages import (
    PROTOCOL_VERSION,
    STREAM_CREDIT,
    Call,
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
)
from ..ipc.messages import Ready as ReadyMessage
from . import policy
from .policy import Phase
from .process import Spawned, WorkerSpec, kill_now, read_lines, spawn, terminate
from .stats import CallStats, process_usage
from .streams import StreamReply

log = logging.getLogger(__name__)

EVENT_BACKLOG = 100  # events a worker may have unacknowledged before new ones are dropped


@dataclass
class LogLine:
    at: float
    level: str
    logger: str
    message: str


@dataclass
class Hooks:
    """What the actor needs from the rest of the runtime (no import of the gateway or store)."""

    issue_token: Callable[[list[str]], tuple[str, float]]
    revoke_tokens: Callable[[], None]
    properties: Callable[[], list[str]]
    handle_core_call: Callable[[CoreCall], Awaitable[Any]]
    record: Callable[[str, dict[str, Any]], None]  # (event type, fields) for the event log
    config: Callable[[], dict[str, Any]] = dict


@dataclass
class _Pending:
    done: trio.Event = field(default_factory=trio.Event)
    result: Reply | HttpReply | StreamReply | Failure | HealthReport | None = None
    error: PentarunError | None = None


class _Generation:
    """One run of the worker process."""

    def __init__(self, number: int) -> None:
        self.number = number
        self.spawned: Spawned | None = None
        self.channel: Channel[WorkerMessage] | None = None
        self.hello: Hello | None = None
        self.ready = False
        self.pending: dict[int, _Pending] = {}
        self.streams: dict[int, trio.MemorySendChannel[bytes | StreamEnd]] = {}
        self.core_calls = 0
        self.started_at = time.time()
        self.ended = trio.Event()
        self.kill_requested = False
        self.events_in_flight: set[int] = set()
        self.log_window = 0.0
        self.logs_in_window = 0
        self.logs_dropped = 0

    @property
    def pid(self) -> int | None:
        return self.spawned.process.pid if self.spawned else None

    def fail_pending(self, error: PentarunError) -> None:
        for slot in self.pending.values():
            slot.error = error
            slot.done.set()
        self.pending.clear()
        for stream in self.streams.values():
            stream.close()  # the client's response ends where the worker died
        self.streams.clear()


class WorkerActor:
    def __init__(
        self,
        spec: WorkerSpec,
        config: SupervisorConfig,
        hooks: Hooks,
        manifest: dict[str, Any] | None = None,
    ) -> None:
        self.key = spec.key
        self.spec = spec
        self.config = config
        self.hooks = hooks
        self.manifest = manifest or {}
        self.policy = policy.Policy(config)
        self.state = policy.State()
        self.logs: collections.deque[LogLine] = collections.deque(maxlen=config.log_lines_kept)
        self.last_exit: str = ""
        self._last_call: tuple[str, str, float] | None = None
        self._properties: frozenset[str] = frozenset()
        self.stats = CallStats()
        self._cpu_sample: tuple[float, float] | None = None  # (wall time, CPU seconds)
        self.last_health: dict[str, Any] = {}
        self._ids = itertools.count(1)
        self._gen: _Generation | None = None
        self._gen_numbers = itertools.count(1)
        self._inbox_send, self._inbox = trio.open_memory_channel[tuple[policy.Event, int | None]](
            1024
        )
        self._changed = trio.Event()
        self._nursery: trio.Nursery | None = None
        self._rand = random.Random()
        self.events_dropped = 0
        self._inbox_overflowed = False

    # --- public surface -------------------------------------------------------------------

    @property
    def phase(self) -> Phase:
        return self.state.phase

    @property
    def pid(self) -> int | None:
        return self._gen.pid if self._gen and self._gen.spawned else None

    @property
    def started_at(self) -> float | None:
        return self._gen.started_at if self._gen else None

    def start(self) -> None:
        self._post(policy.Start())

    def stop(self, reason: str = "stopped by operator") -> None:
        self._post(policy.StopRequested(reason))

    def quarantine(self, reason: str) -> None:
        self._post(policy.QuarantineRequested(reason))

    def release(self) -> None:
        self._post(policy.Release())

    async def wait_for(self, *phases: Phase) -> Phase:
        while self.state.phase not in phases:
            await self._changed.wait()
        return self.state.phase

    async def call(
        self,
        handler: str,
        property_id: str,
        params: dict[str, Any],
        deadline_s: float | None = None,
    ) -> Reply | HttpReply | StreamReply:
        """Run a handler in the worker for one property."""
        gen = self._gen
        if self.state.phase is not Phase.RUNNING or gen is None or gen.channel is None:
            raise WorkerUnavailable(
                f"plugin {self.key!r} is {self.state.phase.value.lower()}"
                + (f": {self.state.reason}" if self.state.reason else ""),
                {
                    "phase": self.state.phase.value,
                    "reason": self.state.reason,
                    "next_retry_at": self.state.next_retry_at,
                },
            )
        if property_id not in self._properties:
            raise PropertyNotAssigned(
                f"plugin {self.key!r} is not enabled for property {property_id!r}",
                {"property": property_id},
            )
        if len(gen.pending) >= self.config.max_in_flight:
            raise Busy(
                f"plugin {self.key!r} has {len(gen.pending)} calls in flight",
                {"max_in_flight": self.config.max_in_flight},
            )
        timeout = self.config.call_timeout_s if deadline_s is None else deadline_s
        started = trio.current_time()
        try:
            result = await self._call(gen, handler, property_id, params, timeout)
        except PentarunError as exc:
            # a plugin's own 4xx answer (not found, bad request) is a correct answer
            answered = isinstance(exc, RemoteError) and exc.http_status < 500
            self.stats.record(trio.current_time(), trio.current_time() - started, ok=answered)
            raise
        self.stats.record(trio.current_time(), trio.current_time() - started, ok=True)
        return result

    async def _call(
        self,
        gen: _Generation,
        handler: str,
        property_id: str,
        params: dict[str, Any],
        timeout_s: float,
    ) -> Reply | HttpReply | StreamReply:
        assert gen.channel is not None
        call_id = next(self._ids)
        slot = gen.pending[call_id] = _Pending()
        self._last_call = (handler, property_id, trio.current_time())
        try:
            gen.channel.send(Call(call_id, handler, property_id, params, int(timeout_s * 1000)))
        except ChannelClosed:
            gen.pending.pop(call_id, None)
            raise WorkerCrashed(f"plugin {self.key!r} worker channel is closed") from None
        with trio.move_on_after(timeout_s):
            await slot.done.wait()
        if not slot.done.is_set():
            gen.pending.pop(call_id, None)
            gen.channel.send_if_open(Cancel(call_id))
            raise CallTimeout(f"plugin {self.key!r} did not answer {handler!r} in {timeout_s:g} s")
        if slot.error is not None:
            raise slot.error
        result = slot.result
        if isinstance(result, Failure):
            raise RemoteError(result.code, result.message, result.status)
        assert isinstance(result, Reply | HttpReply | StreamReply)
        return result

    @property
    def last_call(self) -> dict[str, Any]:
        if self._last_call is None:
            return {}
        handler, property_id, at = self._last_call
        return {
            "handler": handler,
            "property": property_id,
            "at": time.time() - (trio.current_time() - at),
        }

    def _issue_token(self) -> tuple[str, float]:
        """A fresh token for the current assignments, which also gate `call`."""
        self._properties = frozenset(self.hooks.properties())
        return self.hooks.issue_token(sorted(self._properties))

    def serves(self, property_id: str) -> bool:
        """Whether the worker is running and assigned to this property."""
        return self.state.phase is Phase.RUNNING and property_id in self._properties

    def deliver(self, event_type: str, property_id: str, data: dict[str, Any]) -> bool:
        """Send an event unless EVENT_BACKLOG of them are still unacknowledged (then drop it)."""
        gen = self._gen
        if gen is None or gen.channel is None or not gen.ready:
            return False
        if len(gen.events_in_flight) >= EVENT_BACKLOG:
            self.events_dropped += 1
            if self.events_dropped in (1, 10, 100, 1000) or self.events_dropped % 10000 == 0:
                self.hooks.record(
                    "events_dropped",
                    {
                        "reason": f"{self.events_dropped} events "
                        f"dropped: {EVENT_BACKLOG} unacknowledged"
                    },
                )
            return False
        event_id = next(self._ids)
        gen.events_in_flight.add(event_id)
        return gen.channel.send_if_open(
            PlatformEvent(event_id, event_type, property_id, data, time.time())
        )

    def push_config(self, config: dict[str, Any]) -> None:
        """Send a new configuration to the running worker (new workers get it in Welcome)."""
        gen = self._gen
        if gen is not None and gen.channel is not None and gen.hello is not None:
            gen.channel.send_if_open(ConfigUpdate(config))

    def refresh_token(self) -> None:
        """Re-issue the worker's token now (e.g. its property assignments changed)."""
        self._properties = frozenset(self.hooks.properties())
        gen = self._gen
        if gen is not None and gen.channel is not None and gen.hello is not None:
            gen.channel.send_if_open(TokenRefresh(*self._issue_token()))

    # --- the actor loop -------------------------------------------------------------------

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            task_status.started()
            async for event, generation in self._inbox:
                if generation is not None and (self._gen is None or generation != self._gen.number):
                    continue  # from a worker generation that is gone
                self._apply(event)

    def _post(self, event: policy.Event, generation: int | None = None) -> None:
        try:
            self._inbox_send.send_nowait((event, generation))
        except trio.WouldBlock:
            if not self._inbox_overflowed:
                self._inbox_overflowed = True
                log.warning("plugin %s: inbox full, dropping %s", self.key, type(event).__name__)

    def _apply(self, event: policy.Event) -> None:
        before = self.state
        self.state, commands = self.policy.step(
            before, event, trio.current_time(), self._rand.random()
        )
        for command in commands:
            self._execute(command)
        if self.state.phase is not before.phase:
            self._changed.set()
            self._changed = trio.Event()

    def _execute(self, command: policy.Command) -> None:
        assert self._nursery is not None
        match command:
            case policy.Spawn():
                self._gen = _Generation(next(self._gen_numbers))
                self._nursery.start_soon(self._run_generation, self._gen)
            case policy.Kill(graceful=graceful):
                if self._gen is not None:
                    self._nursery.start_soon(self._kill, self._gen, graceful)
            case policy.WakeAt(at=at):
                self._nursery.start_soon(self._wake_at, at)
            case policy.Transition(phase=phase, reason=reason, next_retry_at=retry):
                wall_retry = None if retry is None else time.time() + retry - trio.current_time()
                log.info("plugin %s: %s (%s)", self.key, phase.value, reason)
                self.hooks.record(
                    "state_changed",
                    {
                        "state": phase.value,
                        "reason": reason,
                        "next_retry_at": wall_retry,
                        "restarts": self.state.restarts,
                    },
                )
            case policy.EnterQuarantine(rule=rule, reason=reason):
                self.hooks.revoke_tokens()
                if self._gen is not None:
                    self._gen.fail_pending(WorkerUnavailable(f"plugin {self.key!r} quarantined"))
                self.hooks.record(
                    "quarantined",
                    {
                        "state": Phase.QUARANTINED.value,
                        "rule": rule,
                        "reason": reason,
                        "evidence": self.evidence(),
                    },
                )

    def fail(self, reason: str) -> None:
        """The actor itself broke (a bug): fail closed, as a quarantine that needs a release."""
        self.state = msgspec.structs.replace(
            self.state, phase=Phase.QUARANTINED, reason=reason, rule="internal_error"
        )
        self.hooks.revoke_tokens()
        if self._gen is not None:
            self._gen.fail_pending(WorkerUnavailable(f"plugin {self.key!r} actor failed"))
            if self._gen.spawned is not None:
                kill_now(self._gen.spawned.process)
        self.hooks.record(
            "quarantined",
            {
                "state": Phase.QUARANTINED.value,
                "rule": "internal_error",
                "reason": reason,
                "evidence": self.evidence(),
            },
        )
        self._changed.set()

    def evidence(self) -> dict[str, Any]:
        return {
            "last_exit": self.last_exit,
            "last_log_lines": [f"{ln.level} {ln.logger}: {ln.message}" for ln in self.logs][-20:],
            "last_call": self.last_call,
        }

    async def _wake_at(self, at: float) -> None:
        await trio.sleep_until(at)
        self._post(policy.Wake())

    async def _kill(self, gen: _Generation, graceful: bool) -> None:
        spawned = gen.spawned
        if spawned is None:  # still spawning: _run_generation kills it once it exists
            gen.kill_requested = True
            return
        if not graceful:
            kill_now(spawned.process)
            return

        def request_stop() -> None:
            if gen.channel is not None:
                gen.channel.send_if_open(Stop("stop requested by supervisor"))

        await terminate(spawned.process, request_stop, self.config.stop_timeout_s)

    # --- one worker generation ------------------------------------------------------------

    async def _run_generation(self, gen: _Generation) -> None:
        try:
            gen.spawned = await spawn(self.spec, self.config.max_frame_bytes)
        except OSError as exc:
            self.last_exit = f"could not be started: {exc}"
            self._add_log("ERROR", "pentarun.supervisor", self.last_exit)
            self._post(policy.Exited(code=None), gen.number)
            return
        process = gen.spawned.process
        if gen.kill_requested:
            kill_now(process)
        self.hooks.record(
            "spawned",
            {"pid": process.pid, "generation": gen.number, "restarts": self.state.restarts},
        )
        gen.channel = Channel(
            gen.spawned.channel_stream, WorkerMessage, self.config.max_frame_bytes
        )
        channel_done, output_done = trio.Event(), trio.Event()
        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self._read_channel, gen, channel_done)
                nursery.start_soon(self._read_output, gen, output_done)
                nursery.start_soon(self._startup_deadline, gen)
                nursery.start_soon(self._health_loop, gen)
                nursery.start_soon(self._token_refresh_loop, gen)
                if self.spec.memory_limit_mb is not None:
                    nursery.start_soon(self._memory_watch, gen, self.spec.memory_limit_mb)
                await process.wait()
                gen.fail_pending(WorkerCrashed(f"plugin {self.key!r} worker exited"))
                with trio.move_on_after(1.0):  # collect the last frames and output lines
                    await channel_done.wait()
                    await output_done.wait()
                nursery.cancel_scope.cancel()
        finally:
            kill_now(process)
            with trio.CancelScope(shield=True), trio.move_on_after(10):
                await process.wait()  # reap it, even when the supervisor is being cancelled
                await gen.spawned.output.aclose()
                await gen.spawned.channel_stream.aclose()
            gen.ended.set()
        code = process.returncode
        assert code is not None
        exited = policy.Exited(code=code) if code >= 0 else policy.Exited(signal=-code)
        self.last_exit = policy.describe_exit(exited)
        if code < 0:
            self.last_exit += f" ({signal.Signals(-code).name})"
        self._post(exited, gen.number)

    async def _read_channel(self, gen: _Generation, done: trio.Event) -> None:
        assert gen.channel is not None
        try:
            await gen.channel.run(lambda message: self._on_message(gen, message))
        except* ProtocolError as group:
            detail = str(group.exceptions[0])
            self._add_log("ERROR", "pentarun.supervisor", f"protocol violation: {detail}")
            self._post(policy.ProtocolViolation(detail), gen.number)
        finally:
            gen.fail_pending(WorkerCrashed(f"plugin {self.key!r} worker channel closed"))
            done.set()

    async def _read_output(self, gen: _Generation, done: trio.Event) -> None:
        assert gen.spawned is not None
        try:
            await read_lines(
                gen.spawned.output, lambda line: self._add_log("OUTPUT", "stdout", line)
            )
        finally:
            done.set()

    async def _startup_deadline(self, gen: _Generation) -> None:
        await trio.sleep(self.config.startup_timeout_s)
        if not gen.ready:
            self._add_log("ERROR", "pentarun.supervisor", "no handshake before the deadline")
            self._post(policy.StartupTimeout(), gen.number)

    async def _health_loop(self, gen: _Generation) -> None:
        while True:
            await trio.sleep(self.config.health_interval_s)
            if not gen.ready:
                continue
            health = await self._probe(gen)
            self.last_health = health
            if health["ok"]:
                self._post(policy.HealthOk(), gen.number)
            else:
                self._post(policy.HealthFailed(health["error"]), gen.number)
            self.hooks.record("health", health)

    async def probe_health(self) -> dict[str, Any]:
        """Probe the running worker now: `{"ok", "at", "latency_ms", "detail"[, "error"]}`."""
        gen = self._gen
        if self.state.phase is not Phase.RUNNING or gen is None:
            raise WorkerUnavailable(f"plugin {self.key!r} is {self.state.phase.value.lower()}")
        return await self._probe(gen)

    async def _probe(self, gen: _Generation) -> dict[str, Any]:
        timeout = self.config.health_timeout_s
        call_id = next(self._ids)
        slot = gen.pending[call_id] = _Pending()
        started = trio.current_time()
        if gen.channel is not None and gen.channel.send_if_open(HealthProbe(call_id)):
            with trio.move_on_after(timeout):
                await slot.done.wait()
        gen.pending.pop(call_id, None)
        report = slot.result
        health: dict[str, Any] = {
            "ok": isinstance(report, HealthReport) and report.ok,
            "at": time.time(),
            "latency_ms": (trio.current_time() - started) * 1000,
            "detail": report.detail if isinstance(report, HealthReport) else {},
        }
        if not health["ok"]:
            health["error"] = (
                f"no answer within {timeout:g} s"
                if not slot.done.is_set()
                else "worker reported unhealthy"
            )
        return health

    def usage(self) -> dict[str, float | None]:
        """CPU use since the last look (percent of one core) and resident memory of the worker."""
        pid = self.pid
        sample = process_usage(pid) if pid is not None else None
        if sample is None:
            self._cpu_sample = None
            return {"cpu_percent": None, "memory_mb": None, "cpu_seconds": None}
        cpu, rss = sample
        now = time.monotonic()
        percent = None
        if self._cpu_sample is not None and now > self._cpu_sample[0]:
            percent = 100 * (cpu - self._cpu_sample[1]) / (now - self._cpu_sample[0])
        self._cpu_sample = (now, cpu)
        return {"cpu_percent": percent, "memory_mb": rss / 2**20, "cpu_seconds": cpu}

    def kill(self) -> None:
        """SIGKILL the current worker process (the recovery gate's crash)."""
        if self._gen is not None and self._gen.spawned is not None:
            kill_now(self._gen.spawned.process)

    async def _memory_watch(self, gen: _Generation, limit_mb: int) -> None:
        while True:
            await trio.sleep(self.config.memory_check_s)
            usage = process_usage(gen.pid) if gen.pid is not None else None
            if usage is not None and usage[1] > limit_mb * 2**20:
                detail = f"{usage[1] / 2**20:.0f} MB resident, memory_limit is {limit_mb} MB"
                self._add_log("ERROR", "pentarun.supervisor", f"memory limit exceeded: {detail}")
                self._post(policy.ResourceExceeded(detail), gen.number)
                return

    async def _token_refresh_loop(self, gen: _Generation) -> None:
        while True:
            await trio.sleep(self.config.token_ttl_s * 2 / 3)
            if self._gen is gen:
                self.refresh_token()

    def _on_message(self, gen: _Generation, message: WorkerMessage) -> None:
        if gen.hello is None and not isinstance(message, Hello):
            raise ProtocolError(f"expected hello first, got {type(message).__name__}")
        match message:
            case Reply() | HttpReply() | Failure() | HealthReport():
                slot = gen.pending.pop(message.id, None)
                if slot is not None:  # a late answer to a call that timed out is dropped
                    slot.result = message
                    slot.done.set()
            case StreamStart():
                self._on_stream_start(gen, message)
            case EventDone(id=event_id):
                gen.events_in_flight.discard(event_id)
            case StreamChunk(id=stream_id, data=data):
                sink = gen.streams.get(stream_id)
                if sink is not None:
                    try:
                        sink.send_nowait(data)
                    except trio.WouldBlock:
                        raise ProtocolError(f"stream {stream_id} sent beyond its credit") from None
                    except trio.BrokenResourceError:  # the client left; cancel is on its way
                        gen.streams.pop(stream_id, None)
            case StreamEnd(id=stream_id):
                sink = gen.streams.pop(stream_id, None)
                if sink is not None:
                    with contextlib.suppress(trio.WouldBlock, trio.BrokenResourceError):
                        sink.send_nowait(message)
                    sink.close()
            case CoreCall():
                self._on_core_call(gen, message)
            case Log():
                self._on_log(gen, message)
            case Hello():
                self._on_hello(gen, message)
            case ReadyMessage():
                if gen.ready:
                    raise ProtocolError("ready sent twice")
                gen.ready = True
                self._post(policy.Ready(), gen.number)

    def _on_log(self, gen: _Generation, record: Log) -> None:
        if record.level >= logging.ERROR and self.state.phase is not Phase.QUARANTINED:
            self._post(policy.ErrorLogged(), gen.number)
        now = trio.current_time()
        if now - gen.log_window >= 1.0:
            if gen.logs_dropped:
                self._add_log(
                    "WARNING",
                    "pentarun.supervisor",
                    f"{gen.logs_dropped} log records dropped (over "
                    f"{self.config.log_records_per_s}/s)",
                )
            gen.log_window, gen.logs_in_window, gen.logs_dropped = now, 0, 0
        gen.logs_in_window += 1
        if gen.logs_in_window > self.config.log_records_per_s:
            gen.logs_dropped += 1
            return
        self._add_log(logging.getLevelName(record.level), record.logger, record.message)

    def _on_stream_start(self, gen: _Generation, start: StreamStart) -> None:
        slot = gen.pending.pop(start.id, None)
        channel = gen.channel
        assert channel is not None
        if slot is None:  # the caller gave up before the stream began
            channel.send_if_open(Cancel(start.id))
            return
        sink, source = trio.open_memory_channel[bytes | StreamEnd](STREAM_CREDIT + 1)
        gen.streams[start.id] = sink

        def send(message: object) -> bool:
            if isinstance(message, Cancel):
                gen.streams.pop(start.id, None)
            return channel.send_if_open(message)

        slot.result = StreamReply(start, source, send)
        slot.done.set()

    def _on_hello(self, gen: _Generation, hello: Hello) -> None:
        if gen.hello is not None:
            raise ProtocolError("hello sent twice")
        if hello.protocol != PROTOCOL_VERSION:
            raise ProtocolError(
                f"worker speaks protocol {hello.protocol}, the core speaks {PROTOCOL_VERSION}"
            )
        gen.hello = hello
        token, expires = self._issue_token()
        assert gen.channel is not None
        gen.channel.send(Welcome(PROTOCOL_VERSION, self.key, token, expires, self.hooks.config()))

    def _on_core_call(self, gen: _Generation, call: CoreCall) -> None:
        assert self._nursery is not None and gen.channel is not None
        if gen.core_calls >= self.config.max_in_flight:
            gen.channel.send(CoreFailure(call.id, "busy", "too many core calls in flight", 429))
            return
        gen.core_calls += 1
        self._nursery.start_soon(self._serve_core_call, gen, call)

    async def _serve_core_call(self, gen: _Generation, call: CoreCall) -> None:
        assert gen.channel is not None
        reply: CoreResult | CoreFailure
        try:
            with trio.fail_after(self.config.call_timeout_s):
                value = await self.hooks.handle_core_call(call)
            reply = CoreResult(call.id, value)
        except PentarunError as exc:
            reply = CoreFailure(call.id, exc.error_code, exc.message, exc.http_status)
        except trio.TooSlowError:
            reply = CoreFailure(call.id, "call_timeout", f"core call {call.name!r} timed out", 504)
        except Exception as exc:
            log.exception("core call %s from %s failed", call.name, self.key)
            reply = CoreFailure(call.id, "internal_error", f"{type(exc).__name__}", 500)
        finally:
            gen.core_calls -= 1
        gen.channel.send_if_open(reply)

    def _add_log(self, level: str, logger: str, message: str) -> None:
        self.logs.append(LogLine(time.time(), level, logger, message))
