"""Which clips of a property retention removes. Pure: clips and the time in, ids out.

A clip goes when it ended more than `max_age_s` ago; then, while what is left of the
property's clips holds more than `max_bytes`, the oldest goes (by start, then id). Clips still
being recorded are not clips yet: they are not given here, and each is bounded on its own
(`[recordings] max_duration_s`).

Invariants (tests/recordings/test_retention.py, hypothesis): what is kept is at most
`max_bytes` in all and holds no clip older than `max_age_s`; every clip removed is either too
old or older than every clip kept; a property within both bounds loses nothing.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Protocol


class Clip(Protocol):
    @property
    def id(self) -> str: ...
    @property
    def started_at(self) -> float: ...
    @property
    def ended_at(self) -> float: ...
    @property
    def bytes(self) -> int: ...


def expired(clips: Iterable[Clip], now: float, max_age_s: float, max_bytes: int) -> list[str]:
    """The ids of the clips to remove, oldest first."""
    ordered = sorted(clips, key=lambda c: (c.started_at, c.id))
    removed = [c.id for c in ordered if now - c.ended_at > max_age_s]
    kept = [c for c in ordered if now - c.ended_at <= max_age_s]
    total = sum(c.bytes for c in kept)
    for clip in kept:
        if total <= max_bytes:
            break
        removed.append(clip.id)
        total -= clip.bytes
    return removed
