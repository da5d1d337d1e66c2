"""Fixed-window rate limiting per client. Pure: time is an argument."""

from __future__ import annotations

import math
from dataclasses import dataclass


@dataclass(frozen=True)
class Decision:
    allowed: bool
    limit: int
    remaining: int
    reset_s: int  # whole seconds until the window ends (>= 1)
    window_s: float

    def headers(self) -> dict[str, str]:
        return {
            "RateLimit-Policy": f'"default";q={self.limit};w={int(self.window_s)}',
            "RateLimit": f'"default";r={self.remaining};t={self.reset_s}',
            "X-RateLimit-Limit": str(self.limit),
            "X-RateLimit-Remaining": str(self.remaining),
            "X-RateLimit-Reset": str(self.reset_s),
        }


class RateLimiter:
    def __init__(self, limit: int, window_s: float, max_clients: int = 100_000) -> None:
        self.limit = limit
        self.window_s = window_s
        self._windows: dict[str, tuple[float, int]] = {}  # client -> (window start, count)
        self._max_clients = max_clients

    def hit(self, client: str, now: float) -> Decision:
        start, count = self._windows.get(client, (now, 0))
        if now - start >= self.window_s:
            start, count = now, 0
        allowed = count < self.limit
        if allowed:
            count += 1
        if len(self._windows) >= self._max_clients and client not in self._windows:
            self._forget_expired(now)
        self._windows[client] = (start, count)
        reset = max(1, math.ceil(start + self.window_s - now))
        return Decision(allowed, self.limit, self.limit - count, reset, self.window_s)

    def _forget_expired(self, now: float) -> None:
        for client in [c for c, (s, _) in self._windows.items() if now - s >= self.window_s]:
            del self._windows[client]
