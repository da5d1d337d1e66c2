"""Recordings against a real store and the camera hub's demo cameras (real JPEG frames):
clips made, extended, stopped, listed, read, confined to their property, expired, reloaded."""

from contextlib import asynccontextmanager

import pytest
import trio

from pentarun.cameras.hub import CameraHub
from pentarun.config import RecordingsConfig
from pentarun.errors import NotFound
from pentarun.recordings.clips import ClipDir, ClipMeta, ClipWriter, new_clip_id, read_parts
from pentarun.recordings.service import Recordings, RecordingsUnavailable, TooManyRecordings
from pentarun.store import records
from pentarun.store.db import open_database

CONFIG = RecordingsConfig(max_fps=20, max_active=2, retention_interval_s=3600)


class Clock:
    def __init__(self) -> None:
        self.offset = 0.0

    def __call__(self) -> float:
        return 1_700_000_000.0 + trio.current_time() + self.offset


async def record(rec, prop, cam, seconds=0.4):
    """A clip of about `seconds` (started, waited for, stopped); its metadata."""
    started = await rec.start(prop, cam, 30, "request", "x")
    await trio.sleep(seconds)
    with trio.fail_after(10):
        clip = await rec.stop(prop, cam)
    assert clip is not None and clip.id == started["id"]
    return clip


@asynccontextmanager
async def recordings(tmp_path, config=CONFIG, *, clock=None, run=True):
    async with open_database(tmp_path / "db.sqlite") as db, trio.open_nursery() as nursery:
        for prop in ("p1", "p2"):
            if records.get_property(db, prop) is None:
                await records.create_property(db, prop, prop)
        for prop, cam in (("p1", "c1"), ("p1", "c2"), ("p1", "c3"), ("p2", "c1")):
            if records.get_camera(db, prop, cam) is None:
                await records.create_camera(db, prop, cam, name=cam, source={"kind": "demo"})
        events: list[tuple] = []

        def publish(type_, prop, data, source):
            events.append((type_, prop, data, source))
            return 0

        service = Recordings(
            db, CameraHub(), tmp_path / "rec", config, publish, clock=clock or Clock()
        )
        if run:
            await nursery.start(service.run)
        try:
            yield service, events
        finally:
            nursery.cancel_scope.cancel()


async def test_a_clip_is_recorded_listed_read_and_announced(tmp_path):
    async with recordings(tmp_path) as (rec, events):
        started = await rec.start("p1", "c1", 0.6, "request", "plugin:probe")
        assert started["extended"] is False and started["camera"] == "c1"
        assert [a["id"] for a in rec.active("p1")] == [started["id"]] and rec.active("p2") == []
        with trio.fail_after(10):
            while True:  # the clip ends on its own
                if events:
                    break
                await trio.sleep(0.05)
        (event,) = events
        assert event[:2] == ("recording.created", "p1") and event[3] == "core:recordings"
        clip = rec.get("p1", started["id"])
        assert event[2] == clip.view() and clip.trigger == "request" and clip.by == "plugin:probe"
        assert 0.5 <= clip.duration_s < 3 and clip.frames >= 2
        _, data, size = await rec.read("p1", clip.id, 0, 10 * 1024 * 1024)
        assert size == len(data) == clip.bytes
        frames = [p.jpeg for p in read_parts(data)]
        assert len(frames) == clip.frames and all(f[:2] == b"\xff\xd8" for f in frames)
        chunk = (await rec.read("p1", clip.id, 5, 7))[1]
        assert chunk == data[5:12]
        assert rec.page("p1") == [clip] and rec.page("p1", camera="c2") == []
        assert rec.page("p1", after=clip.id) == []
        with pytest.raises(NotFound):  # another property's clip: as if unknown
            rec.get("p2", clip.id)
        with pytest.raises(NotFound):
            await rec.read("p2", clip.id, 0, 10)
        assert rec.active("p1") == []


async def test_a_start_while_recording_extends_and_stop_finishes_at_once(tmp_path):
    async with recordings(tmp_path) as (rec, events):
        first = await rec.start("p1", "c1", 30, "admin", "operator:root")
        again = await rec.start("p1", "c1", 60, "motion", "core:motion")
        assert again["id"] == first["id"] and again["extended"] is True
        assert again["until"] > first["until"]
        await trio.sleep(0.4)
        with trio.fail_after(5):
            clip = await rec.stop("p1", "c1")
        assert clip is not None and clip.id == first["id"] and clip.trigger == "admin"
        assert clip.duration_s < 5 and [e[2]["id"] for e in events] == [clip.id]
        with pytest.raises(NotFound):
            await rec.stop("p1", "c1")
        with pytest.raises(NotFound):  # another property's camera
            await rec.start("p2", "c2", 1, "request", "plugin:x")


async def test_concurrent_clips_are_bounded(tmp_path):
    async with recordings(tmp_path) as (rec, _):
        await rec.start("p1", "c1", 30, "request", "x")
        await rec.start("p1", "c2", 30, "request", "x")
        with pytest.raises(TooManyRecordings):
            await rec.start("p1", "c3", 30, "request", "x")
        await rec.stop("p1", "c1")
        await rec.start("p1", "c3", 30, "request", "x")


async def test_not_running_is_unavailable(tmp_path):
    async with recordings(tmp_path, run=False) as (rec, _):
        with pytest.raises(RecordingsUnavailable):
            await rec.start("p1", "c1", 1, "request", "x")


async def test_retention_by_age_and_size_and_the_index_survives_a_restart(tmp_path):
    clock = Clock()
    config = RecordingsConfig(max_fps=20, max_age_h=1, max_mb=1, retention_interval_s=3600)
    async with recordings(tmp_path, config, clock=clock) as (rec, _):
        ids = [(await record(rec, "p1", cam)).id for cam in ("c1", "c2", "c3")]
        ids.append((await record(rec, "p2", "c1")).id)
        assert [c.id for c in rec.page("p1")] == ids[:3]
        assert await rec.enforce_retention() == 0

    async with recordings(tmp_path, config, clock=clock) as (rec, _):  # reloaded from disk
        assert [c.id for c in rec.page("p1")] == ids[:3]
        assert [c.id for c in rec.page("p1", after=ids[0], limit=1)] == [ids[1]]
        clock.offset = 3601  # an hour later: all of them too old
        assert await rec.enforce_retention() == 4
        assert rec.page("p1") == rec.page("p2") == []
        assert not any((tmp_path / "rec" / "p1").iterdir())


async def test_the_oldest_clips_go_when_a_property_holds_too_much(tmp_path):
    clips, ids = ClipDir(tmp_path / "rec"), []
    for i in range(5):  # 5 clips of 300 KB on disk, as an earlier run left them
        clip_id = new_clip_id(1_700_000_000 + i, f"{i:08x}")
        writer = ClipWriter(clips.data_path("p1", clip_id))
        writer.write(b"\xff\xd8" + bytes(300 * 1024), 1_700_000_000 + i)
        writer.close()
        clips.write_meta(
            ClipMeta(
                id=clip_id, property_id="p1", camera="c1", started_at=1_700_000_000 + i,
                ended_at=1_700_000_000.5 + i, frames=1, bytes=writer.bytes, trigger="motion",
                by="core:motion",
            )
        )  # fmt: skip
        ids.append(clip_id)
    config = RecordingsConfig(max_mb=1, max_age_h=24 * 366, retention_interval_s=3600)
    async with recordings(tmp_path, config) as (rec, _):  # retention runs once at start
        assert [c.id for c in rec.page("p1")] == ids[2:]
        assert await rec.enforce_retention() == 0
        assert sorted(p.stem for p in (tmp_path / "rec" / "p1").glob("*.mjpeg")) == ids[2:]
