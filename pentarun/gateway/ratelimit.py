"""Fixed-window limits for the plugin listeners. Pure: time is an argument, no I/O.

    RateLimiter.hit(client, now, quota) -> Decision      a request budget per client
    FailureLimiter.blocked(address, now) -> Decision | None
    FailureLimiter.failed(address, now) -> Decision      failed authentication per address

Invariants (tested with hypothesis): within one window a client is allowed at most
`quota.requests` requests; an address that failed authentication `limit` times in a window is
blocked, whatever it presents, until that window ends, and never longer.

Failures count per `address_bucket`: an IPv4 address is its own bucket, an IPv6 address
counts for its whole /64 (one host is routinely given a /64 and can rotate through it at
will, so a limit per full IPv6 address would be no limit at all).

Memory is bounded: each limiter keeps at most `max_clients` windows, in the order they
started; when full it forgets the window that started first, live or expired (O(1)). With one
window length (a FailureLimiter) that is also the first to expire, so expired windows go
before any live one; with several (a RateLimiter whose keys have budgets of their own) a live
window that started earlier can go while a shorter, later one has already expired. That costs
the forgotten client a fresh budget, never anyone a refusal.
"""

from __future__ import annotations

import ipaddress
import math
from dataclasses import dataclass

DEFAULT_MAX_CLIENTS = 100_000
IPV6_BUCKET_PREFIX = 64


def address_bucket(address: str) -> str:
    """Whom an address's failures count against: an IPv4 address itself (an IPv4-mapped IPv6
    address is its IPv4 address), an IPv6 address its /64; anything else as it is given."""
    try:
        ip = ipaddress.ip_address(address.split("%", 1)[0])  # without an IPv6 zone id
    except ValueError:
        return address
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            return str(ip.ipv4_mapped)
        network = ipaddress.IPv6Network((ip, IPV6_BUCKET_PREFIX), strict=False)
        return str(network)
    return str(ip)


@dataclass(frozen=True)
class Quota:
    """At most `requests` requests per `window_s` seconds."""

    requests: int
    window_s: float

    def __post_init__(self) -> None:
        if self.requests < 1 or not self.window_s > 0:
            raise ValueError(f"a quota needs requests >= 1 and window_s > 0, not {self}")


@dataclass(frozen=True)
class Decision:
    allowed: bool
    limit: int
    remaining: int
    reset_s: int  # whole seconds until the window ends (>= 1)
    window_s: float

    def headers(self) -> dict[str, str]:
        """SPEC §8's rate-limit headers, on every response of a listener."""
        return {
            "RateLimit-Policy": f'"default";q={self.limit};w={max(1, math.ceil(self.window_s))}',
            "RateLimit": f'"default";r={self.remaining};t={self.reset_s}',
            "X-RateLimit-Limit": str(self.limit),
            "X-RateLimit-Remaining": str(self.remaining),
            "X-RateLimit-Reset": str(self.reset_s),
        }


@dataclass
class _Window:
    start: float
    length: float
    count: int

    def expired(self, now: float) -> bool:
        return now - self.start >= self.length

    def reset_s(self, now: float) -> int:
        """Whole seconds until the window ends: 1..ceil(length) (rounding never adds one)."""
        left = self.length - (now - self.start)
        return max(1, min(math.ceil(self.length), math.ceil(left)))


class _Windows:
    """client -> its current window, oldest first, at most `max_clients` of them."""

    def __init__(self, max_clients: int) -> None:
        self._windows: dict[str, _Window] = {}
        self._max_clients = max(1, max_clients)

    def current(self, client: str, now: float, length: float) -> _Window:
        """The client's live window; a new one (count 0) when it had none or it ended."""
        window = self._windows.get(client)
        if window is not None and not window.expired(now) and now >= window.start:
            return window
        if window is not None:
            del self._windows[client]  # re-inserted at the end: the order stays by start
        while len(self._windows) >= self._max_clients:
            oldest = next(iter(self._windows))
            del self._windows[oldest]  # the first started (see the module docstring)
        window = self._windows[client] = _Window(now, length, 0)
        return window

    def peek(self, client: str, now: float) -> _Window | None:
        window = self._windows.get(client)
        return None if window is None or window.expired(now) else window

    def __len__(self) -> int:
        return len(self._windows)


class RateLimiter:
    """A request budget per client (an HA key: stream tokens spend their key's budget)."""

    def __init__(self, max_clients: int = DEFAULT_MAX_CLIENTS) -> None:
        self._windows = _Windows(max_clients)

    def hit(self, client: str, now: float, quota: Quota) -> Decision:
        window = self._windows.current(client, now, quota.window_s)
        allowed = window.count < quota.requests
        if allowed:
            window.count += 1
        remaining = max(0, quota.requests - window.count)
        return Decision(allowed, quota.requests, remaining, window.reset_s(now), quota.window_s)

    def __len__(self) -> int:
        return len(self._windows)


class FailureLimiter:
    """Failed authentications per client address: `limit` per window, then blocked.

    Once an address has failed `limit` times in a window, every request from it answers 429
    until the window (which began at its first failure) ends, even one with a correct key: a
    guesser learns nothing from the answers. Successes neither count nor reset the count.
    Addresses are counted by `address_bucket` (an IPv6 address with its whole /64).
    """

    def __init__(self, limit: int, window_s: float, max_clients: int = DEFAULT_MAX_CLIENTS) -> None:
        self.quota = Quota(limit, window_s)
        self._windows = _Windows(max_clients)

    def blocked(self, address: str, now: float) -> Decision | None:
        """The refusal for an address that used up its failures, or None when it may try."""
        window = self._windows.peek(address_bucket(address), now)
        if window is None or window.count < self.quota.requests:
            return None
        return Decision(False, self.quota.requests, 0, window.reset_s(now), self.quota.window_s)

    def failed(self, address: str, now: float) -> Decision:
        """Count one failure; the decision says how many the address has left."""
        window = self._windows.current(address_bucket(address), now, self.quota.window_s)
        window.count = min(window.count + 1, self.quota.requests)
        remaining = self.quota.requests - window.count
        return Decision(
            remaining > 0, self.quota.requests, remaining, window.reset_s(now), self.quota.window_s
        )

    def status(self, address: str, now: float) -> Decision:
        """What the address has left, without counting anything (for the headers)."""
        window = self._windows.peek(address_bucket(address), now)
        used, reset = (
            (0, math.ceil(self.quota.window_s))
            if window is None
            else (
                window.count,
                window.reset_s(now),
            )
        )
        remaining = self.quota.requests - used
        return Decision(
            remaining > 0, self.quota.requests, remaining, max(1, reset), self.quota.window_s
        )

    def __len__(self) -> int:
        return len(self._windows)
