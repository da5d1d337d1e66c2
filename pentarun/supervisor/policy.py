"""Supervision policy for one worker: a pure state machine (SPEC §4).

    Policy(config).step(state, event, now, rand) -> (state, commands)

No I/O and no clock: `now` is the caller's monotonic time in seconds, `rand` a uniform sample in
[0, 1) for the backoff jitter. The actor carries out the commands and feeds back what happened.

Phases:  IDLE -Start-> STARTING -Ready-> RUNNING
         a crash (unexpected exit, startup timeout, protocol violation) -> BACKOFF -Wake-> STARTING
         health failures (every `health_restart_after`) -> RESTARTING -Exited-> STARTING
         Stop -> STOPPING -Exited-> STOPPED;  crash loop / health / error storm -> QUARANTINED
Invariants (tested with hypothesis): QUARANTINED is left only by Release; a backoff delay never
exceeds `backoff_max_s`; no more than `crash_limit` crash restarts fall inside `crash_window_s`.

Restarts: the first restart after a start, a release or a healthy run of `backoff_reset_s` is
immediate (as OTP and systemd restart); backoff grows from the second crash on. A worker that
passed a health check is *proven*: if it then crash-loops into quarantine, the quarantine is
marked for probation (the install service re-tests and releases it on its own).
"""

from __future__ import annotations

import enum

import msgspec

from ..config import SupervisorConfig


class Phase(enum.StrEnum):
    IDLE = "IDLE"
    STARTING = "STARTING"
    RUNNING = "RUNNING"
    RESTARTING = "RESTARTING"
    BACKOFF = "BACKOFF"
    STOPPING = "STOPPING"
    STOPPED = "STOPPED"
    QUARANTINED = "QUARANTINED"


class Rule(enum.StrEnum):
    CRASH_LOOP = "crash_loop"
    HEALTH = "health"
    ERROR_STORM = "error_storm"
    INTEGRITY = "integrity"
    OPERATOR = "operator"


class State(msgspec.Struct, frozen=True):
    phase: Phase = Phase.IDLE
    process_alive: bool = False
    crashes: tuple[float, ...] = ()
    errors: tuple[float, ...] = ()
    health_failures: int = 0
    attempt: int = 0
    running_since: float | None = None
    next_retry_at: float | None = None
    restarts: int = 0
    reason: str = ""
    rule: str = ""
    proven: bool = False  # passed a health check since its last start or release
    start_pending: bool = False  # started again while stopping: spawn once the old one exits


# --- events: what happened ------------------------------------------------------------------


class Event(msgspec.Struct, frozen=True):
    pass


class Start(Event, frozen=True):
    pass


class Ready(Event, frozen=True):
    pass


class Exited(Event, frozen=True):
    code: int | None = None
    signal: int | None = None


class StartupTimeout(Event, frozen=True):
    pass


class IntegrityFailed(Event, frozen=True):
    """The install tree differs from what was installed: quarantined before anything ran."""

    reason: str = ""


class StartRefused(Event, frozen=True):
    """The worker could not be started safely (the sandbox is unavailable): not a crash."""

    reason: str = ""


class ProtocolViolation(Event, frozen=True):
    detail: str = ""


class ResourceExceeded(Event, frozen=True):
    """The worker used more than its manifest allows (e.g. memory): killed, counted as a crash."""

    detail: str = ""


class HealthOk(Event, frozen=True):
    pass


class HealthFailed(Event, frozen=True):
    detail: str = ""


class ErrorLogged(Event, frozen=True):
    pass


class Wake(Event, frozen=True):
    pass


class StopRequested(Event, frozen=True):
    reason: str = "stopped by operator"


class QuarantineRequested(Event, frozen=True):
    reason: str = "quarantined by operator"


class Release(Event, frozen=True):
    pass


# --- commands: what the actor must do -------------------------------------------------------


class Command(msgspec.Struct, frozen=True):
    pass


class Spawn(Command, frozen=True):
    pass


class Kill(Command, frozen=True):
    """Stop the process: graceful request, SIGTERM, SIGKILL; `graceful=False` kills at once."""

    graceful: bool = True


class WakeAt(Command, frozen=True):
    at: float


class Transition(Command, frozen=True):
    """A phase change to record, with its reason and the next retry time if one is scheduled."""

    phase: Phase
    reason: str
    next_retry_at: float | None = None


class EnterQuarantine(Command, frozen=True):
    """Revoke the worker's access now, alert, and record the rule with its evidence."""

    rule: str
    reason: str
    probation: bool = False


def describe_exit(event: Exited) -> str:
    if event.signal is not None:
        return f"killed by signal {event.signal}"
    if event.code is None:
        return "could not be started"
    return f"exited with code {event.code}"


class Policy:
    def __init__(self, config: SupervisorConfig) -> None:
        self.config = config

    def backoff_delay(self, attempt: int, rand: float) -> float:
        """0 for the first restart (attempt 0), then initial doubling up to the cap, jittered."""
        if attempt <= 0:
            return 0.0
        c = self.config
        base = min(c.backoff_max_s, c.backoff_initial_s * 2 ** min(attempt - 1, 32))
        return float(base * (1.0 - c.backoff_jitter * rand))

    def step(
        self, state: State, event: Event, now: float, rand: float = 0.5
    ) -> tuple[State, list[Command]]:
        phase = state.phase
        match event:
            case Start() if phase in (Phase.IDLE, Phase.STOPPED) and not state.process_alive:
                return self._spawn(self._fresh(state), "started", restart=False)
            case Start() if phase is Phase.STOPPING:
                return msgspec.structs.replace(state, start_pending=True), []
            case Ready() if phase is Phase.STARTING:
                # health_failures survive a health restart: 3 -> restart ... 9 -> quarantine.
                return self._to(state, Phase.RUNNING, "handshake complete", running_since=now)
            case Exited() if not state.process_alive:
                return state, []
            case Exited():
                return self._exited(
                    msgspec.structs.replace(state, process_alive=False), event, now, rand
                )
            case StartRefused(reason=reason) if phase is Phase.STARTING:
                return self._to(
                    state,
                    Phase.STOPPED,
                    f"not started: {reason}",
                    process_alive=False,
                    next_retry_at=None,
                )
            case IntegrityFailed(reason=reason) if phase is Phase.STARTING:
                unspawned = msgspec.structs.replace(state, process_alive=False)
                return self._quarantine(unspawned, Rule.INTEGRITY, reason, kill=False)
            case StartupTimeout() if phase is Phase.STARTING:
                timeout = self.config.startup_timeout_s
                return self._crash(
                    state,
                    now,
                    rand,
                    f"no handshake within {timeout:g} s",
                    kill=Kill(graceful=False),
                )
            case ResourceExceeded() if phase in (Phase.STARTING, Phase.RUNNING):
                return self._crash(
                    state, now, rand, f"resource limit: {event.detail}", kill=Kill(graceful=False)
                )
            case ProtocolViolation() if phase in (Phase.STARTING, Phase.RUNNING):
                return self._crash(
                    state,
                    now,
                    rand,
                    f"protocol violation: {event.detail}",
                    kill=Kill(graceful=False),
                )
            case HealthOk() if phase is Phase.RUNNING:
                return msgspec.structs.replace(state, health_failures=0, proven=True), []
            case HealthFailed() if phase is Phase.RUNNING:
                return self._health_failed(state, event)
            case ErrorLogged() if phase is not Phase.QUARANTINED:
                return self._error_logged(state, now)
            case Wake() if phase is Phase.BACKOFF and not state.process_alive:
                if state.next_retry_at is not None and now < state.next_retry_at:
                    return state, []
                return self._spawn(state, "retry after backoff", restart=True)
            case StopRequested() if phase is Phase.STOPPING:
                return msgspec.structs.replace(state, start_pending=False), []
            case StopRequested() if phase not in (Phase.QUARANTINED, Phase.STOPPED, Phase.IDLE):
                if state.process_alive:
                    new, cmds = self._to(state, Phase.STOPPING, event.reason, next_retry_at=None)
                    return new, [*cmds, Kill(graceful=True)]
                return self._to(state, Phase.STOPPED, event.reason, next_retry_at=None)
            case QuarantineRequested() if phase is not Phase.QUARANTINED:
                return self._quarantine(state, Rule.OPERATOR, event.reason)
            case Release() if phase is Phase.QUARANTINED:
                return self._to(
                    State(
                        phase=Phase.STOPPED,
                        process_alive=state.process_alive,
                        restarts=state.restarts,
                    ),
                    Phase.STOPPED,
                    "released by operator",
                    force=True,
                )
        return state, []

    # --- helpers ----------------------------------------------------------------------------

    @staticmethod
    def _fresh(state: State) -> State:
        """A start by an operator: a clean slate for health, backoff and probation."""
        return msgspec.structs.replace(
            state, health_failures=0, attempt=0, proven=False, start_pending=False
        )

    def _to(
        self, state: State, phase: Phase, reason: str, *, force: bool = False, **changes: object
    ) -> tuple[State, list[Command]]:
        new = msgspec.structs.replace(state, phase=phase, reason=reason, **changes)
        if not force and new.phase == state.phase and new.reason == state.reason:
            return new, []
        return new, [Transition(phase, reason, new.next_retry_at)]

    def _spawn(self, state: State, reason: str, *, restart: bool) -> tuple[State, list[Command]]:
        new, cmds = self._to(
            state,
            Phase.STARTING,
            reason,
            process_alive=True,
            next_retry_at=None,
            running_since=None,
            restarts=state.restarts + (1 if restart else 0),
        )
        return new, [*cmds, Spawn()]

    def _exited(
        self, state: State, event: Exited, now: float, rand: float
    ) -> tuple[State, list[Command]]:
        match state.phase:
            case Phase.STARTING | Phase.RUNNING:
                return self._crash(state, now, rand, describe_exit(event), kill=None)
            case Phase.RESTARTING:
                return self._spawn(state, state.reason, restart=True)
            case Phase.STOPPING if state.start_pending:
                return self._spawn(self._fresh(state), "started", restart=False)
            case Phase.STOPPING:
                return self._to(state, Phase.STOPPED, state.reason)
            case Phase.BACKOFF if state.next_retry_at is not None and now >= state.next_retry_at:
                return self._spawn(state, "retry after backoff", restart=True)
        return state, []

    def _crash(
        self, state: State, now: float, rand: float, reason: str, kill: Kill | None
    ) -> tuple[State, list[Command]]:
        c = self.config
        crashes = (*(t for t in state.crashes if now - t < c.crash_window_s), now)
        attempt = state.attempt
        if state.running_since is not None and now - state.running_since >= c.backoff_reset_s:
            attempt = 0
        state = msgspec.structs.replace(state, crashes=crashes, attempt=attempt, running_since=None)
        kills: list[Command] = [kill] if kill is not None else []
        if len(crashes) >= c.crash_limit:
            detail = f"{len(crashes)} crashes within {c.crash_window_s:g} s; last: {reason}"
            new, cmds = self._quarantine(
                state, Rule.CRASH_LOOP, detail, kill=False, probation=state.proven
            )
            return new, [*kills, *cmds]
        delay = self.backoff_delay(attempt, rand)
        retry_at = now + delay
        when = f"retry in {delay:.3g} s" if delay > 0 else "restarting at once"
        new, cmds = self._to(
            state,
            Phase.BACKOFF,
            f"crashed: {reason}; {when}",
            attempt=attempt + 1,
            next_retry_at=retry_at,
            health_failures=0,
        )
        return new, [*kills, *cmds, WakeAt(retry_at)]

    def _health_failed(self, state: State, event: HealthFailed) -> tuple[State, list[Command]]:
        c = self.config
        failures = state.health_failures + 1
        state = msgspec.structs.replace(state, health_failures=failures)
        detail = f"{failures} consecutive failed health checks" + (
            f" ({event.detail})" if event.detail else ""
        )
        if failures >= c.health_quarantine_after:
            return self._quarantine(state, Rule.HEALTH, detail)
        if failures % c.health_restart_after == 0:
            new, cmds = self._to(state, Phase.RESTARTING, f"restart: {detail}", running_since=None)
            return new, [*cmds, Kill(graceful=True)]
        return state, []

    def _error_logged(self, state: State, now: float) -> tuple[State, list[Command]]:
        c = self.config
        errors = (*(t for t in state.errors if now - t < c.error_storm_window_s), now)
        state = msgspec.structs.replace(state, errors=errors)
        if len(errors) >= c.error_storm_count:
            detail = f"{len(errors)} ERROR log records within {c.error_storm_window_s:g} s"
            return self._quarantine(state, Rule.ERROR_STORM, detail)
        return state, []

    def _quarantine(
        self, state: State, rule: Rule, reason: str, *, kill: bool = True, probation: bool = False
    ) -> tuple[State, list[Command]]:
        new, cmds = self._to(
            state,
            Phase.QUARANTINED,
            reason,
            rule=rule.value,
            next_retry_at=None,
            running_since=None,
            start_pending=False,
        )
        kills: list[Command] = [Kill(graceful=False)] if kill and state.process_alive else []
        return new, [*kills, *cmds, EnterQuarantine(rule.value, reason, probation)]
