"""Retention, pure: by age, then by size, oldest first."""

from dataclasses import dataclass

from hypothesis import given
from hypothesis import strategies as st

from pentarun.recordings.retention import expired


@dataclass(frozen=True)
class Clip:
    id: str
    started_at: float
    ended_at: float
    bytes: int


clips = st.lists(
    st.builds(
        lambda i, start, length, size: Clip(f"{i:04d}", start, start + length, size),
        st.integers(0, 9999),
        st.floats(0, 10_000),
        st.floats(0, 600),
        st.integers(0, 10_000),
    ),
    max_size=30,
    unique_by=lambda c: c.id,
)


@given(clips, st.floats(0, 20_000), st.floats(0, 5_000), st.integers(0, 100_000))
def test_what_is_kept_fits_both_bounds_and_only_the_oldest_go_for_size(
    items, now, max_age_s, max_bytes
):
    removed = expired(items, now, max_age_s, max_bytes)
    assert len(removed) == len(set(removed))
    kept = [c for c in items if c.id not in removed]
    assert sum(c.bytes for c in kept) <= max_bytes
    assert all(now - c.ended_at <= max_age_s for c in kept)
    for clip in items:
        if clip.id in removed and now - clip.ended_at <= max_age_s:
            assert all((clip.started_at, clip.id) < (k.started_at, k.id) for k in kept)


@given(clips)
def test_a_property_within_its_bounds_loses_nothing(items):
    now = max((c.ended_at for c in items), default=0.0)
    assert expired(items, now, now, sum(c.bytes for c in items)) == []


def test_age_first_then_the_oldest_until_it_fits():
    items = [Clip("a", 0, 10, 5), Clip("b", 100, 110, 5), Clip("c", 200, 210, 5)]
    assert expired(items, 1000, 895, 100) == ["a"]
    assert expired(items, 1000, 10_000, 5) == ["a", "b"]
    assert expired(items, 1000, 880, 0) == ["a", "b", "c"]
