"""Handing a plugin over from its running worker to a new one (an upgrade; a live reload). Pure.

    start_outcome(state, evidence) -> Starting | Started | StartFailed
    drain_report(at_handover, at_end, waited_s, timed_out) -> DrainReport

The supervisor's shell (`Supervisor.succeed`, `promote`, `abandon`) carries a hand over out:
  1. the successor (the new version's actor) starts beside the routed one, which keeps serving;
  2. `start_outcome` of the successor's state decides when it is ready: its first worker
     passed the handshake (Started), or it failed on the way — any crash, refused start,
     failed integrity check or quarantine before RUNNING is StartFailed (no restart is waited
     for: the old worker still serves, so the hand over is simply not made);
  3. once promoted, the successor gets every new call and stream; the predecessor takes no
     new one (a call that reaches it late, or still waits for it, is passed on) and drains:
     its calls in flight and open streams may finish within `supervisor.drain_timeout_s`;
  4. then it is stopped gracefully, and `drain_report` says what happened to its load.

Invariants (tested with hypothesis): a successor that ever restarted is never Started; every
call in flight at the hand over is counted exactly once as finished, moved on or cut; every
stream open during the drain is counted once as finished or cut; nothing is cut when nothing
was left open (the shell waits for that, up to the timeout).
"""

from __future__ import annotations

import msgspec

from .events import Evidence
from .policy import Phase, State

WAITING = (Phase.IDLE, Phase.STARTING)


class Starting(msgspec.Struct, frozen=True):
    """The successor's first worker has not passed its handshake yet."""


class Started(msgspec.Struct, frozen=True):
    """The successor's first worker is RUNNING: it may take calls."""


class StartFailed(msgspec.Struct, frozen=True):
    """The successor did not start: why, and what its worker left behind."""

    reason: str
    evidence: Evidence = Evidence()


StartOutcome = Starting | Started | StartFailed


def start_outcome(state: State, evidence: Evidence | None = None) -> StartOutcome:
    """Where the successor's start stands, from its policy state."""
    if state.restarts > 0 or state.crashes:
        return StartFailed(_why(state), evidence or Evidence())
    if state.phase is Phase.RUNNING:
        return Started()
    if state.phase in WAITING:
        return Starting()
    return StartFailed(_why(state), evidence or Evidence())


def _why(state: State) -> str:
    return f"{state.phase.value}: {state.reason}" if state.reason else state.phase.value


class Load(msgspec.Struct, frozen=True):
    """An actor's load at one moment: calls and streams open now, and running totals of the
    streams it has handed out and of the calls it passed on to its successor."""

    calls: int = 0
    streams: int = 0
    streams_started: int = 0
    calls_moved: int = 0


class DrainReport(msgspec.Struct, frozen=True):
    """What the drain of a predecessor did with its load (the `drained` detail of `upgraded`)."""

    calls_in_flight: int = 0  # calls open on the old worker when the successor took over
    calls_finished: int = 0  # of those, ended on the old worker (answered, or failed there)
    calls_moved: int = 0  # of those, still waiting for the old worker: the successor ran them
    calls_cut: int = 0  # still running at the drain timeout: they failed when it stopped
    streams: int = 0  # streams open on the old worker during the drain
    streams_finished: int = 0  # ended by their client or the worker before the timeout
    streams_cut: int = 0  # still open at the drain timeout: they ended when it stopped
    waited_s: float = 0.0
    timed_out: bool = False


def drain_report(at_handover: Load, at_end: Load, waited_s: float, timed_out: bool) -> DrainReport:
    """The drain's outcome from the predecessor's load when the successor took over and when
    the drain ended (the timeout, or nothing left)."""
    in_flight = at_handover.calls
    moved = min(in_flight, max(0, at_end.calls_moved - at_handover.calls_moved))
    cut = min(in_flight - moved, at_end.calls)
    streams = at_handover.streams + max(0, at_end.streams_started - at_handover.streams_started)
    streams_cut = min(streams, at_end.streams)
    return DrainReport(
        calls_in_flight=in_flight,
        calls_finished=in_flight - moved - cut,
        calls_moved=moved,
        calls_cut=cut,
        streams=streams,
        streams_finished=streams - streams_cut,
        streams_cut=streams_cut,
        waited_s=round(max(0.0, waited_s), 3),
        timed_out=timed_out,
    )


__all__ = [
    "DrainReport",
    "Load",
    "StartFailed",
    "StartOutcome",
    "Started",
    "Starting",
    "drain_report",
    "start_outcome",
]
