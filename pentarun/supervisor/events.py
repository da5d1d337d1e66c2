"""What an actor tells the rest of the runtime, as typed events (no `record(kind, dict)`).

The supervisor turns each into its store rows and audit entries; other parts (the install
service) subscribe with `Observers.subscribe(fn)` when they are constructed. Pure data.
"""

from __future__ import annotations

from collections.abc import Callable

import msgspec


class Evidence(msgspec.Struct, frozen=True):
    """Why a worker was stopped: its last exit, last log lines, last call."""

    last_exit: str = ""
    last_log_lines: list[str] = []
    last_call: dict[str, object] = {}


class HealthResult(msgspec.Struct, frozen=True):
    ok: bool
    at: float
    latency_ms: float
    detail: dict[str, object] = {}
    error: str = ""


class ActorEvent(msgspec.Struct, frozen=True, tag=True):
    key: str


class StateChanged(ActorEvent, frozen=True):
    state: str
    reason: str
    next_retry_at: float | None = None  # wall-clock time
    restarts: int = 0


class Spawned(ActorEvent, frozen=True):
    pid: int
    generation: int
    restarts: int = 0


class Quarantined(ActorEvent, frozen=True):
    rule: str
    reason: str
    evidence: Evidence = Evidence()
    # a crash loop of a plugin that had served well: re-tested on its own after probation_s
    probation: bool = False


class HealthChecked(ActorEvent, frozen=True):
    result: HealthResult


class EventsDropped(ActorEvent, frozen=True):
    dropped: int
    backlog: int


class CallRefused(ActorEvent, frozen=True):
    """A call or core call refused before it ran (busy, not assigned): audited."""

    what: str  # "call" | "core_call"
    name: str
    property: str
    code: str
    message: str


Observer = Callable[[ActorEvent], None]


class Observers:
    """Fan-out of actor events; an observer that raises is logged by the caller, not fatal."""

    def __init__(self) -> None:
        self._observers: list[Observer] = []

    def subscribe(self, observer: Observer) -> None:
        self._observers.append(observer)

    def __call__(self, event: ActorEvent) -> None:
        for observer in self._observers:
            observer(event)
