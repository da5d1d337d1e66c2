"""How the console colours a state. Pure."""

from __future__ import annotations

GOOD = frozenset({"ENABLED", "RUNNING", "VERIFIED", "PASSED"})
BAD = frozenset({"REJECTED", "QUARANTINED", "FAILED"})
WARN = frozenset({"DEPENDENCIES_PENDING", "DEGRADED", "BACKOFF", "RESTARTING", "QUEUED"})


def state_class(state: str | None) -> str:
    """The badge class of a plugin or worker state."""
    state = (state or "").upper()
    if state in GOOD:
        return "good"
    if state in BAD:
        return "bad"
    if state in WARN:
        return "warn"
    return "neutral"
