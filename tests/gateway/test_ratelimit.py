from hypothesis import given
from hypothesis import strategies as st

from pentarun.gateway.ratelimit import RateLimiter


def test_window_limits_and_resets():
    limiter = RateLimiter(3, 60)
    decisions = [limiter.hit("k", 100.0 + i) for i in range(4)]
    assert [d.allowed for d in decisions] == [True, True, True, False]
    assert [d.remaining for d in decisions] == [2, 1, 0, 0]
    assert decisions[3].reset_s == 57
    assert limiter.hit("other", 103.0).allowed
    assert limiter.hit("k", 160.0).allowed
    headers = decisions[0].headers()
    assert headers["RateLimit-Policy"] == '"default";q=3;w=60'
    assert headers["RateLimit"] == '"default";r=2;t=60'
    assert headers["X-RateLimit-Remaining"] == "2"


@given(st.lists(st.floats(0, 10), max_size=60), st.integers(1, 10))
def test_never_more_than_limit_in_a_window(gaps, limit):
    limiter = RateLimiter(limit, 5.0)
    now, allowed_at = 0.0, []
    for gap in gaps:
        now += gap
        decision = limiter.hit("k", now)
        assert decision.reset_s >= 1 and 0 <= decision.remaining <= limit
        if decision.allowed:
            allowed_at.append(now)
    for i, t in enumerate(allowed_at):
        assert len([u for u in allowed_at[i:] if u - t < 5.0]) <= 2 * limit  # two adjacent windows
