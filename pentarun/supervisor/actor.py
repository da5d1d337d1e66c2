"""One actor per plugin worker: its inbox, its policy, and the calls it admits.

Everything that happens (operator requests, process exits, handshake, health results, ERROR
logs, timers) becomes a policy event on the actor's inbox; one task feeds them to
`Policy.step` and carries out the commands. Each run of the worker is a `Generation`; events
from an older generation are dropped.

Calls (`call`) ride out starts and restarts: a call waits while the worker is starting or a
restart is due before its deadline (see mailbox.py), fails fast (503 + Retry-After) otherwise,
is bounded with the other calls in flight (`Busy`), and, when the worker dies with it in
flight, is retried once on the next worker if it is idempotent.

Hand over (handover.py): once `hand_to(successor)` ran, the actor takes no new call — a call
that reaches it, or still waits for its worker, goes to the successor with what is left of
its deadline — while the calls already delivered and the streams it handed out finish
(`load`, `wait_idle` let the supervisor drain it).
"""

from __future__ import annotations

import logging
import math
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import msgspec
import trio

from ..config import SupervisorConfig
from ..errors import (
    Busy,
    PentarunError,
    PropertyNotAssigned,
    RemoteError,
    WorkerCrashed,
    WorkerUnavailable,
)
from ..ipc.messages import (
    PROTOCOL_VERSION,
    CallParams,
    ConfigUpdate,
    CoreCall,
    Hello,
    HttpReply,
    Reply,
    TokenRefresh,
    Welcome,
)
from ..packages.manifest import Manifest
from ..sandbox.launcher import Sandbox
from ..sandbox.profile import Bind
from . import mailbox, policy
from .events import (
    ActorEvent,
    CallRefused,
    EventsDropped,
    Evidence,
    HealthChecked,
    HealthResult,
    Quarantined,
    StateChanged,
)
from .generation import EVENT_BACKLOG, Generation, Links
from .handover import Load, Starting, StartOutcome, start_outcome
from .policy import Phase
from .process import WorkerSpec
from .stats import CallStats
from .streams import StreamReply
from .telemetry import LogLine, Telemetry

log = logging.getLogger(__name__)

__all__ = ["EVENT_BACKLOG", "Hooks", "LogLine", "WorkerActor"]

STARTUP_ESTIMATE_S = 1.0  # until a start has been measured


class _HandedOver(Exception):
    """The call waited for this actor's worker, and a successor took over meanwhile."""


@dataclass
class Hooks:
    """What the actor needs from the rest of the runtime (no import of the gateway or store)."""

    issue_token: Callable[[list[str]], tuple[str, float]]
    # revoke the plugin's tokens on behalf of this actor: only the routed actor's revocation
    # counts (a failing successor or a draining predecessor must not cut the serving one off)
    revoke_tokens: Callable[[WorkerActor], None]
    properties: Callable[[], list[str]]
    handle_core_call: Callable[[CoreCall], Awaitable[Any]]
    emit: Callable[[ActorEvent], None]
    config: Callable[[], dict[str, Any]] = dict
    # before every start: why the install tree may not run ("" when it may)
    check_tree: Callable[[Path], Awaitable[str]] | None = None
    extra_env: dict[str, str] = field(default_factory=dict)  # e.g. the egress proxy variables
    extra_binds: tuple[Bind, ...] = ()  # e.g. the egress socket, in the sandbox


class WorkerActor:
    def __init__(
        self,
        spec: WorkerSpec,
        config: SupervisorConfig,
        hooks: Hooks,
        manifest: Manifest,
        sandbox: Sandbox | None = None,
    ) -> None:
        """`sandbox` None means unsandboxed (`security.sandbox = "off"`, reported)."""
        self.sandbox = sandbox
        self.key = spec.key
        self.spec = spec
        self.config = config
        self.hooks = hooks
        self.manifest = manifest
        self.policy = policy.Policy(config)
        self.state = policy.State()
        self.telemetry = Telemetry(config.log_lines_kept, config.log_records_per_s)
        self.last_health: HealthResult | None = None
        self.events_dropped = 0
        self._properties: frozenset[str] = frozenset()
        self._gen: Generation | None = None
        self._generations = 0
        self._calls_open = 0
        self._streams_open = 0
        self._streams_started = 0
        self._calls_moved = 0
        self._settled = trio.Event()  # set whenever a call or a stream ends
        self._successor: WorkerActor | None = None
        self._startup_s = STARTUP_ESTIMATE_S
        # unbounded, as every producer is: operators, one exit and one handshake per process,
        # timers, health checks per interval, ERROR records within log_records_per_s
        self._inbox_send, self._inbox = trio.open_memory_channel[tuple[policy.Event, int | None]](
            math.inf
        )
        self.failed = False  # the actor itself broke: its inbox is no longer read
        self._changed = trio.Event()
        self._nursery: trio.Nursery | None = None
        self._rand = random.Random()
        health = manifest.health_check
        self._health_interval_s = health.interval_s or config.health_interval_s
        self._health_timeout_s = health.timeout_s or config.health_timeout_s

    # --- what others read -----------------------------------------------------------------

    @property
    def phase(self) -> Phase:
        return self.state.phase

    @property
    def pid(self) -> int | None:
        """The worker's pid from the moment its process exists until it has been reaped."""
        gen = self._gen
        return gen.pid if gen is not None and not gen.ended.is_set() else None

    @property
    def hello(self) -> Hello | None:
        """What the current worker declared in its handshake (handlers, hooks, events)."""
        return self._gen.hello if self._gen is not None else None

    @property
    def started_at(self) -> float | None:
        return self._gen.started_at if self._gen else None

    @property
    def logs(self) -> list[LogLine]:
        return list(self.telemetry.logs)

    @property
    def stats(self) -> CallStats:
        return self.telemetry.stats

    @property
    def last_exit(self) -> str:
        return self.telemetry.last_exit

    def evidence(self) -> Evidence:
        return self.telemetry.evidence()

    def usage(self) -> dict[str, float | None]:
        """CPU, memory and how often the sandbox's limits held the worker back."""
        gen = self._gen
        usage = self.telemetry.usage(gen.usage_sample() if gen else None)
        hits = gen.limits_hit() if gen else {"forks_refused": None, "cpu_throttled_periods": None}
        return {**usage, **{name: None if n is None else float(n) for name, n in hits.items()}}

    def serves(self, property_id: str) -> bool:
        """Whether the worker is running and assigned to this property."""
        return self.state.phase is Phase.RUNNING and property_id in self._properties

    # --- operator requests ------------------------------------------------------------------

    def start(self) -> None:
        self._post(policy.Start())

    def stop(self, reason: str = "stopped by operator") -> None:
        self._post(policy.StopRequested(reason))

    def quarantine(self, reason: str) -> None:
        self._post(policy.QuarantineRequested(reason))

    def release(self) -> None:
        self._post(policy.Release())

    def kill(self) -> None:
        """SIGKILL the current worker process (the recovery gate's crash)."""
        if self._gen is not None:
            self._gen.kill()

    async def wait_for(self, *phases: Phase) -> Phase:
        while self.state.phase not in phases:
            await self._changed.wait()
        return self.state.phase

    # --- hand over ------------------------------------------------------------------------

    async def started(self) -> StartOutcome:
        """Wait until the first worker passed its handshake or failed to (handover.py); the
        caller bounds the wait."""
        while isinstance(outcome := start_outcome(self.state, self.evidence()), Starting):
            await self._changed.wait()
        return outcome

    def hand_to(self, successor: WorkerActor) -> None:
        """From now on every call not yet delivered to this actor's worker is `successor`'s."""
        self._successor = successor
        self._changed.set()  # calls waiting for a worker go to the successor now
        self._changed = trio.Event()

    @property
    def successor(self) -> WorkerActor | None:
        return self._successor

    def load(self) -> Load:
        return Load(self._calls_open, self._streams_open, self._streams_started, self._calls_moved)

    async def wait_idle(self) -> None:
        """Until no call is open and every stream it handed out is closed; the caller bounds
        the wait."""
        while self._calls_open or self._streams_open:
            await self._settled.wait()

    def _settle(self) -> None:
        self._settled.set()
        self._settled = trio.Event()

    def _track(self, stream: StreamReply) -> None:
        self._streams_open += 1
        self._streams_started += 1

        def closed() -> None:
            self._streams_open -= 1
            self._settle()

        stream.when_closed(closed)

    # --- calls ----------------------------------------------------------------------------

    async def call(
        self,
        handler: str,
        property_id: str,
        params: CallParams,
        deadline_s: float | None = None,
        *,
        idempotent: bool = False,
    ) -> Reply | HttpReply | StreamReply:
        """Run a handler in the worker for one property, riding out starts and restarts.

        `idempotent` (a listener's GET route) or the manifest's `idempotent` list allows one
        retry on the next worker when the worker dies with the call in flight. Once handed
        over, the successor runs it."""
        timeout = self.config.call_timeout_s if deadline_s is None else deadline_s
        successor = self._successor
        if successor is not None:
            return await successor.call(
                handler, property_id, params, timeout, idempotent=idempotent
            )
        retry = idempotent or self.manifest.is_idempotent(handler)
        started = trio.current_time()
        if self._calls_open >= self.config.max_in_flight:
            message = f"plugin {self.key!r} has {self._calls_open} calls in flight"
            self._emit(CallRefused(self.key, "call", handler, property_id, Busy.code, message))
            raise Busy(message, {"max_in_flight": self.config.max_in_flight})
        self._calls_open += 1
        try:
            result = await self._call(handler, property_id, params, started + timeout, retry)
            if isinstance(result, StreamReply):
                self._track(result)
        except _HandedOver:
            result = None
        except PentarunError as exc:
            # a plugin's own 4xx answer (not found, bad request) is a correct answer
            answered = isinstance(exc, RemoteError) and exc.http_status < 500
            self.stats.record(trio.current_time(), trio.current_time() - started, ok=answered)
            raise
        finally:
            self._calls_open -= 1
            self._settle()
        if result is None:  # it waited for this worker; the successor runs it instead
            self._calls_moved += 1
            assert self._successor is not None
            left = max(0.001, started + timeout - trio.current_time())
            return await self._successor.call(
                handler, property_id, params, left, idempotent=idempotent
            )
        self.stats.record(trio.current_time(), trio.current_time() - started, ok=True)
        return result

    async def _call(
        self,
        handler: str,
        property_id: str,
        params: CallParams,
        deadline: float,
        idempotent: bool,
    ) -> Reply | HttpReply | StreamReply:
        deliveries = 2 if idempotent else 1  # a call the worker never got is always retried
        while True:
            gen = await self._ready_generation(deadline)
            if property_id not in self._properties:
                raise PropertyNotAssigned(
                    f"plugin {self.key!r} is not enabled for property {property_id!r}",
                    {"property": property_id},
                )
            try:
                return await gen.call(
                    handler, property_id, params, max(0.001, deadline - trio.current_time())
                )
            except WorkerCrashed as exc:
                if exc.details.get("delivered", True):
                    deliveries -= 1
                if deliveries <= 0 or trio.current_time() >= deadline:
                    raise
                log.info("plugin %s: retrying %s on the next worker", self.key, handler)

    async def _ready_generation(self, deadline: float) -> Generation:
        """The running generation, waiting for one while it can be ready before `deadline`."""
        while True:
            if self._successor is not None:
                raise _HandedOver
            now = trio.current_time()
            s = self.state
            decision = mailbox.admit(s.phase, s.next_retry_at, now, deadline, self._startup_s)
            gen = self._gen
            if isinstance(decision, mailbox.Go) and gen is not None and gen.serving:
                return gen
            if isinstance(decision, mailbox.Refuse):
                raise self._unavailable(decision.retry_after_s)
            with trio.move_on_after(deadline - now):
                await self._changed.wait()
            if trio.current_time() >= deadline:
                raise self._unavailable(self._startup_s, waited=True)

    def _unavailable(self, retry_after_s: float | None, *, waited: bool = False) -> PentarunError:
        s = self.state
        what = "was not ready within the call's deadline" if waited else s.phase.value.lower()
        retry = retry_after_s if retry_after_s is not None else self.config.backoff_max_s
        return WorkerUnavailable(
            f"plugin {self.key!r} {'' if waited else 'is '}{what}"
            + (f": {s.reason}" if s.reason else ""),
            {
                "phase": s.phase.value,
                "reason": s.reason,
                "next_retry_at": self._wall(s.next_retry_at),
                "retry_after_s": round(retry, 3),
            },
        )

    async def probe_health(self) -> HealthResult:
        """Probe the running worker now."""
        gen = self._gen
        if self.state.phase is not Phase.RUNNING or gen is None:
            raise WorkerUnavailable(f"plugin {self.key!r} is {self.state.phase.value.lower()}")
        return await gen.probe()

    def deliver(self, event_type: str, property_id: str, data: dict[str, Any]) -> bool:
        """Send an event unless EVENT_BACKLOG of them are still unacknowledged (then drop it)."""
        gen = self._gen
        if gen is None:
            return False
        outcome = gen.deliver(event_type, property_id, data)
        if outcome == "backlog":
            self.events_dropped += 1
            dropped = self.events_dropped
            if dropped in (1, 10, 100, 1000) or dropped % 10000 == 0:
                self._emit(EventsDropped(self.key, dropped, EVENT_BACKLOG))
        return outcome == "sent"

    def push_config(self, config: dict[str, Any]) -> None:
        if self._gen is not None:
            self._gen.send(ConfigUpdate(config))

    def refresh_token(self, *, revoke: bool = True) -> None:
        """Its property assignments changed: revoke every token it holds (an old one still
        names a property it lost) and send it a new one. `revoke` False: the plugin's tokens
        were just revoked for another of its actors (a hand over); only send the new one."""
        if revoke:
            self.hooks.revoke_tokens(self)
        if self._gen is not None:
            self._gen.send(self._token_refresh())

    def _issue_token(self) -> tuple[str, float]:
        """A fresh token for the current assignments, which also gate `call`."""
        self._properties = frozenset(self.hooks.properties())
        return self.hooks.issue_token(sorted(self._properties))

    def _token_refresh(self) -> TokenRefresh:
        return TokenRefresh(*self._issue_token())

    def _welcome(self) -> Welcome:
        token, expires = self._issue_token()
        return Welcome(PROTOCOL_VERSION, self.key, token, expires, self.hooks.config())

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
        self._inbox_send.send_nowait((event, generation))

    def _apply(self, event: policy.Event) -> None:
        before = self.state
        if isinstance(event, policy.Ready) and self._gen is not None:
            measured = self._gen.ready_after_s
            if measured is not None:
                self._startup_s = 0.5 * self._startup_s + 0.5 * measured
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
                self._generations += 1
                self._gen = Generation(self._generations, self._links())
                self._nursery.start_soon(self._gen.run)
            case policy.Kill(graceful=graceful):
                if self._gen is not None:
                    self._nursery.start_soon(self._gen.stop, graceful)
            case policy.WakeAt(at=at):
                self._nursery.start_soon(self._wake_at, at)
            case policy.Transition(phase=phase, reason=reason, next_retry_at=retry):
                log.info("plugin %s: %s (%s)", self.key, phase.value, reason)
                self._emit(
                    StateChanged(
                        self.key, phase.value, reason, self._wall(retry), self.state.restarts
                    )
                )
            case policy.EnterQuarantine(rule=rule, reason=reason, probation=probation):
                self._enter_quarantine(rule, reason, probation)

    def _enter_quarantine(self, rule: str, reason: str, probation: bool = False) -> None:
        self.hooks.revoke_tokens(self)
        if self._gen is not None:
            self._gen.fail_pending(WorkerUnavailable(f"plugin {self.key!r} quarantined"))
        self._emit(Quarantined(self.key, rule, reason, self.evidence(), probation))

    def fail(self, reason: str) -> None:
        """The actor itself broke (a bug): fail closed, as a quarantine that needs a release
        (the supervisor gives a failed actor's plugin a new actor when it is started again)."""
        self.failed = True
        self.state = msgspec.structs.replace(
            self.state, phase=Phase.QUARANTINED, reason=reason, rule="internal_error"
        )
        if self._gen is not None:
            self._gen.kill()
        self._enter_quarantine("internal_error", reason)
        self._changed.set()

    def _links(self) -> Links:
        return Links(
            key=self.key,
            spec=self.spec,
            config=self.config,
            telemetry=self.telemetry,
            post=self._post,
            welcome=self._welcome,
            token_refresh=self._token_refresh,
            core_call=self.hooks.handle_core_call,
            emit=self._emit,
            restarts=lambda: self.state.restarts,
            health_interval_s=self._health_interval_s,
            health_timeout_s=self._health_timeout_s,
            sandbox=self.sandbox,
            resources=self.manifest.resources,
            check_tree=self.hooks.check_tree,
            extra_env=self.hooks.extra_env,
            extra_binds=self.hooks.extra_binds,
        )

    def _emit(self, event: ActorEvent) -> None:
        if isinstance(event, HealthChecked):
            self.last_health = event.result
        self.hooks.emit(event)

    async def _wake_at(self, at: float) -> None:
        await trio.sleep_until(at)
        self._post(policy.Wake())

    @staticmethod
    def _wall(at: float | None) -> float | None:
        """A trio clock time as wall-clock time."""
        return None if at is None else time.time() + at - trio.current_time()
