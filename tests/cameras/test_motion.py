"""Motion detection: the pure detector (hypothesis), the picture it compares, the settings kept
with the camera's source, and the watch publishing `camera.motion` from the hub's frames."""

import io
import itertools

import msgspec
import pytest
import trio
from hypothesis import given
from hypothesis import strategies as st
from PIL import Image

from pentarun.cameras.demo import render_frame
from pentarun.cameras.hub import CameraHub
from pentarun.cameras.motion import (
    SMALL,
    DetectorState,
    MotionSettings,
    changed_fraction,
    motion_of,
    step,
    thumbnail,
)
from pentarun.cameras.motion_watch import MotionWatch
from pentarun.store import records
from pentarun.store.db import open_database

pictures = st.binary(min_size=16, max_size=16)
settings_ = st.builds(
    MotionSettings,
    enabled=st.booleans(),
    threshold=st.floats(0.01, 1),
    pixel_delta=st.integers(1, 255),
    min_interval_s=st.floats(1, 100),
)


@given(settings_, st.lists(st.tuples(pictures, st.floats(0, 10)), max_size=30))
def test_reports_are_spaced_and_need_a_change(settings, frames):
    state, now, reports = DetectorState(), 0.0, []
    previous = None
    for picture, gap in frames:
        now += gap
        state, motion = step(state, settings, picture, now)
        if motion is not None:
            assert settings.enabled and previous is not None and previous != picture
            assert motion.score >= settings.threshold
            reports.append(now)
        previous = picture
    assert all(b - a >= settings.min_interval_s for a, b in itertools.pairwise(reports))


@given(pictures, st.integers(1, 255))
def test_the_same_picture_never_changed(picture, delta):
    assert changed_fraction(picture, picture, delta) == 0.0
    state, first = step(DetectorState(), MotionSettings(enabled=True), picture, 0.0)
    assert first is None  # the first frame only sets the reference
    assert step(state, MotionSettings(enabled=True, threshold=0.001), picture, 99.0)[1] is None


def test_a_moving_object_is_motion_and_a_still_picture_is_not():
    on = MotionSettings(enabled=True, threshold=0.005, min_interval_s=1)
    a, b = thumbnail(render_frame("x", now=0.0)), thumbnail(render_frame("x", now=1.0))
    assert len(a) == SMALL[0] * SMALL[1]
    state, _ = step(DetectorState(), on, a, 0.0)
    state, motion = step(state, on, b, 1.0)
    assert motion is not None and 0.005 <= motion.score < 0.5
    state, again = step(state, on, b, 5.0)
    assert again is None
    big = io.BytesIO()
    Image.new("RGB", (1920, 1080), (90, 90, 90)).save(big, "JPEG")
    flat = thumbnail(big.getvalue())  # a 1080p frame shrinks to the same small picture
    assert len(flat) == len(a) and all(abs(level - 90) <= 2 for level in flat)
    with pytest.raises(ValueError, match="not a picture"):
        thumbnail(b"not a jpeg")


def test_settings_default_to_off_and_bad_ones_read_as_off():
    assert motion_of({"kind": "demo"}) == MotionSettings() and not MotionSettings().enabled
    assert motion_of({"motion": {"enabled": True, "threshold": 7}}) == MotionSettings()
    assert motion_of({"motion": {"enabled": True}}).enabled


async def test_settings_live_in_the_source_and_survive_a_source_change(tmp_path):
    async with open_database(tmp_path / "db.sqlite") as db:
        await records.create_property(db, "p1", "P1")
        await records.create_camera(db, "p1", "c1", name="c1", source={"kind": "demo"})
        on = msgspec.to_builtins(MotionSettings(enabled=True, record_s=5))
        await records.set_camera_motion(db, "p1", "c1", on)
        await records.set_camera_source(db, "p1", "c1", {"kind": "http", "url": "http://h/x"}, None)
        row = records.get_camera(db, "p1", "c1")
        assert row is not None and row.source["url"] == "http://h/x"
        assert motion_of(row.source) == MotionSettings(enabled=True, record_s=5)


async def test_the_watch_publishes_motion_of_enabled_cameras_only(tmp_path):
    async with open_database(tmp_path / "db.sqlite") as db, trio.open_nursery() as nursery:
        await records.create_property(db, "p1", "P1")
        for cid in ("moving", "off"):
            await records.create_camera(db, "p1", cid, name=cid, source={"kind": "demo"})
        published, clips, seen = [], [], trio.Event()

        def publish(type_, prop, data, source):
            published.append((type_, prop, data, source))
            seen.set()
            return 1

        async def on_motion(prop, cam, record_s):
            clips.append((prop, cam, record_s))

        watch = MotionWatch(
            db, CameraHub(), publish, on_motion=on_motion, check_interval_s=0.1, reconcile_s=0.1
        )
        await nursery.start(watch.run)
        assert watch.watching() == []
        settings = MotionSettings(enabled=True, threshold=0.002, min_interval_s=1, record_s=3)
        await records.set_camera_motion(db, "p1", "moving", msgspec.to_builtins(settings))
        with trio.fail_after(15):
            await seen.wait()
        assert watch.watching() == [("p1", "moving")]
        type_, prop, data, source = published[0]
        assert (type_, prop, data["camera"], source) == (
            "camera.motion",
            "p1",
            "moving",
            "core:motion",
        )
        assert data["score"] >= 0.002 and clips[0] == ("p1", "moving", 3.0)
        await records.set_camera_motion(db, "p1", "moving", {})  # `{}`: off again
        with trio.fail_after(5):
            while True:  # polling a state that announces nothing
                if not watch.watching():
                    break
                await trio.sleep(0.05)
        nursery.cancel_scope.cancel()
