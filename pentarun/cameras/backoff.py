"""Reconnect delays of a camera source: exponential with jitter, reset by a frame. Pure.

`delay(failures, jitter)` is the wait before the next attempt after `failures` consecutive
failures (failures >= 1); `jitter` in [0, 1) comes from the caller's random source, so tests
pass it. Invariants: the first delay is `initial`; delays never exceed `maximum`; with jitter
the delay stays within [d * (1 - spread), d].
"""

from __future__ import annotations

import msgspec


class Backoff(msgspec.Struct, frozen=True):
    initial_s: float = 0.5
    maximum_s: float = 30.0
    factor: float = 2.0
    spread: float = 0.2  # at most this share of the delay is taken off at random

    def __post_init__(self) -> None:
        if not (0 < self.initial_s <= self.maximum_s) or self.factor < 1:
            raise ValueError("backoff needs 0 < initial <= maximum and factor >= 1")
        if not 0 <= self.spread < 1:
            raise ValueError("backoff spread must be in [0, 1)")

    def delay(self, failures: int, jitter: float = 0.0) -> float:
        exponent = max(failures - 1, 0)
        base = self.maximum_s
        if exponent < 64:  # beyond that the power overflows long after reaching the maximum
            base = min(self.initial_s * self.factor**exponent, self.maximum_s)
        return base * (1 - self.spread * min(max(jitter, 0.0), 1.0))
