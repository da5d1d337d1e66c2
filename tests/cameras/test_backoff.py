"""Reconnect backoff: exponential, capped, jittered downwards only."""

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pentarun.cameras.backoff import Backoff


def test_doubles_from_the_initial_delay_up_to_the_maximum():
    b = Backoff(initial_s=0.5, maximum_s=4.0, factor=2.0, spread=0.0)
    assert [b.delay(n) for n in range(1, 7)] == [0.5, 1.0, 2.0, 4.0, 4.0, 4.0]


@given(
    st.integers(min_value=1, max_value=10_000),
    st.floats(min_value=0, max_value=1),
    st.floats(min_value=0.01, max_value=10),
    st.floats(min_value=1, max_value=10),
)
def test_bounded_and_jitter_only_shortens(failures, jitter, initial, factor):
    b = Backoff(initial_s=initial, maximum_s=initial * 50, factor=factor, spread=0.2)
    plain = Backoff(initial_s=initial, maximum_s=initial * 50, factor=factor, spread=0.0)
    d = b.delay(failures, jitter)
    assert plain.delay(failures) * 0.8 - 1e-9 <= d <= plain.delay(failures) <= initial * 50
    assert plain.delay(failures) <= plain.delay(failures + 1)


@pytest.mark.parametrize(
    "kwargs", [{"initial_s": 0}, {"initial_s": 5, "maximum_s": 1}, {"factor": 0.5}, {"spread": 1}]
)
def test_refuses_nonsense(kwargs):
    with pytest.raises(ValueError):
        Backoff(**kwargs)
