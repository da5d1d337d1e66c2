import ipaddress

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pentarun.gateway.ratelimit import FailureLimiter, Quota, RateLimiter, address_bucket

Q3 = Quota(3, 60)


def test_window_limits_and_resets():
    limiter = RateLimiter()
    decisions = [limiter.hit("k", 100.0 + i, Q3) for i in range(4)]
    assert [d.allowed for d in decisions] == [True, True, True, False]
    assert [d.remaining for d in decisions] == [2, 1, 0, 0]
    assert decisions[3].reset_s == 57
    assert limiter.hit("other", 103.0, Q3).allowed
    assert limiter.hit("k", 160.0, Q3).allowed
    headers = decisions[0].headers()
    assert headers["RateLimit-Policy"] == '"default";q=3;w=60'
    assert headers["RateLimit"] == '"default";r=2;t=60'
    assert headers["X-RateLimit-Remaining"] == "2"
    assert headers["X-RateLimit-Limit"] == "3" and headers["X-RateLimit-Reset"] == "60"


def test_each_client_has_its_own_quota():
    limiter = RateLimiter()
    small, large = Quota(1, 10), Quota(5, 10)
    assert limiter.hit("a", 0, small).allowed and not limiter.hit("a", 1, small).allowed
    assert all(limiter.hit("b", 1, large).allowed for _ in range(5))
    assert not limiter.hit("b", 2, large).allowed


def test_quotas_must_be_positive():
    for requests, window in ((0, 60), (1, 0), (1, -1)):
        with pytest.raises(ValueError):
            Quota(requests, window)


def test_memory_is_bounded_and_the_oldest_window_goes_first():
    limiter = RateLimiter(max_clients=3)
    for i in range(10):
        limiter.hit(f"c{i}", float(i), Quota(1, 1000))
        assert len(limiter) <= 3
    # c9 is still remembered (refused); c0 was forgotten (a fresh window)
    assert not limiter.hit("c9", 11.0, Quota(1, 1000)).allowed
    assert limiter.hit("c0", 11.0, Quota(1, 1000)).allowed


@given(st.lists(st.floats(0, 10), max_size=60), st.integers(1, 10))
def test_never_more_than_limit_in_a_window(gaps, limit):
    limiter = RateLimiter()
    quota = Quota(limit, 5.0)
    now, allowed_at = 0.0, []
    for gap in gaps:
        now += gap
        decision = limiter.hit("k", now, quota)
        assert decision.reset_s >= 1 and 0 <= decision.remaining <= limit
        if decision.allowed:
            allowed_at.append(now)
    for i, t in enumerate(allowed_at):
        assert len([u for u in allowed_at[i:] if u - t < 5.0]) <= 2 * limit  # two adjacent windows


def test_failures_block_an_address_until_the_window_ends():
    limiter = FailureLimiter(3, 60)
    assert limiter.blocked("1.2.3.4", 0) is None
    remaining = [limiter.failed("1.2.3.4", 10.0 + i).remaining for i in range(3)]
    assert remaining == [2, 1, 0]
    blocked = limiter.blocked("1.2.3.4", 20.0)
    assert blocked is not None and not blocked.allowed and blocked.reset_s == 50
    assert blocked.headers()["RateLimit"] == '"default";r=0;t=50'
    assert limiter.blocked("5.6.7.8", 20.0) is None  # another address
    assert limiter.blocked("1.2.3.4", 69.9) is not None
    assert limiter.blocked("1.2.3.4", 70.0) is None  # the window began at the first failure
    assert limiter.status("1.2.3.4", 70.0).remaining == 3


# (seconds since the last event, is it a failed attempt?)
events = st.lists(st.tuples(st.floats(0, 30), st.booleans()), max_size=80)


@given(events, st.integers(1, 8), st.sampled_from([10.0, 60.0]))
def test_failure_limiter_invariants(steps, limit, window):
    """What the listener does, against a model: an address is blocked exactly when it has
    `limit` failures in the window that began at its first failure, and only until it ends."""
    limiter = FailureLimiter(limit, window)
    now = 0.0
    start, count = None, 0  # the model's window
    for gap, fails in steps:
        now += gap
        if start is not None and now - start >= window:
            start, count = None, 0
        blocked = limiter.blocked("a", now)
        assert (blocked is not None) == (count >= limit)
        if blocked is not None:
            assert 1 <= blocked.reset_s <= window and blocked.remaining == 0
            assert now + blocked.reset_s >= start + window  # never unblocked early
            continue  # a blocked address is answered 429 and counts nothing
        if fails:
            if start is None:
                start = now
            count += 1
            decision = limiter.failed("a", now)
            assert decision.remaining == limit - count
        assert limiter.status("a", now).remaining == limit - count


@given(st.lists(st.integers(0, 50), max_size=200), st.integers(1, 5))
def test_failure_limiter_memory_stays_bounded(addresses, max_clients):
    limiter = FailureLimiter(2, 60, max_clients=max_clients)
    for i, address in enumerate(addresses):
        limiter.failed(str(address), float(i) / 10)
        assert len(limiter) <= max_clients


# --- whom failures count against -----------------------------------------------------------


def test_an_ipv6_address_counts_with_its_whole_64():
    assert address_bucket("2001:db8:1:2:aaaa::1") == "2001:db8:1:2::/64"
    assert address_bucket("2001:db8:1:2:ffff:ffff:ffff:ffff") == "2001:db8:1:2::/64"
    assert address_bucket("2001:db8:1:3::1") == "2001:db8:1:3::/64"
    assert address_bucket("fe80::1%eth0") == "fe80::/64"
    assert address_bucket("::ffff:192.0.2.7") == "192.0.2.7"  # an IPv4 client on a v6 socket
    assert address_bucket("192.0.2.7") == "192.0.2.7"
    assert address_bucket("unknown") == "unknown"


def test_rotating_ipv6_addresses_within_a_64_does_not_escape_the_limit():
    limiter = FailureLimiter(3, 60)
    for i in range(3):
        limiter.failed(f"2001:db8:0:1::{i + 1:x}", float(i))
    assert limiter.blocked("2001:db8:0:1:dead:beef:0:1", 5.0) is not None
    assert limiter.status("2001:db8:0:1::99", 5.0).remaining == 0
    assert limiter.blocked("2001:db8:0:2::1", 5.0) is None  # the next /64 is someone else
    assert len(limiter) == 1


@given(st.integers(0, 2**64 - 1), st.integers(0, 2**64 - 1), st.integers(0, 2**64 - 1))
def test_ipv6_failures_are_shared_within_a_64_and_only_there(prefix, host_a, host_b):
    a = str(ipaddress.IPv6Address((prefix << 64) | host_a))
    b = str(ipaddress.IPv6Address((prefix << 64) | host_b))
    other = str(ipaddress.IPv6Address((((prefix + 1) % 2**64) << 64) | host_a))
    limiter = FailureLimiter(1, 60)
    limiter.failed(a, 0.0)
    assert limiter.blocked(b, 1.0) is not None
    assert limiter.blocked(other, 1.0) is None


@given(st.integers(0, 2**32 - 1), st.integers(0, 2**32 - 1))
def test_ipv4_addresses_count_one_by_one(a, b):
    limiter = FailureLimiter(1, 60)
    limiter.failed(str(ipaddress.IPv4Address(a)), 0.0)
    assert (limiter.blocked(str(ipaddress.IPv4Address(b)), 1.0) is not None) == (a == b)


def test_when_full_the_first_started_window_goes_even_if_a_later_one_expired():
    """The module docstring's eviction rule for windows of different lengths."""
    limiter = RateLimiter(max_clients=2)
    assert limiter.hit("long", 0.0, Quota(1, 1000)).allowed
    assert limiter.hit("short", 1.0, Quota(1, 1)).allowed
    limiter.hit("new", 10.0, Quota(1, 1000))  # "short" has expired, "long" started first
    assert limiter.hit("long", 11.0, Quota(1, 1000)).allowed  # forgotten: a fresh budget
