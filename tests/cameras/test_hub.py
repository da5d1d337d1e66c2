"""The camera hub against cameras served here: one upstream connection per camera, frames
relayed unchanged, reconnects, offline/online, credentials, and PyAV decoding off the loop."""

import io
from contextlib import asynccontextmanager

import pytest
import trio
from PIL import Image

from pentarun.cameras.backoff import Backoff
from pentarun.cameras.credentials import Sealer
from pentarun.cameras.feed import CameraOffline
from pentarun.cameras.hub import CameraHub
from pentarun.cameras.settings import CameraSettings
from pentarun.cameras.source import Credentials
from pentarun.store import records
from pentarun.store.db import open_database

from .fakecams import MjpegCamera, SnapshotCamera, make_jpeg, write_video

SETTINGS = CameraSettings(
    snapshot_interval_s=0.05,
    read_timeout_s=2.0,
    connect_timeout_s=2.0,
    reconcile_s=0.2,
    backoff=Backoff(initial_s=0.05, maximum_s=0.3),
)
SEALER = Sealer(b"x" * 32)


@asynccontextmanager
async def hub_with(tmp_path, cameras):
    """A running hub over a database holding `cameras`: [(id, source, credentials)]."""
    async with open_database(tmp_path / "db.sqlite") as db, trio.open_nursery() as nursery:
        await records.create_property(db, "p1", "P1")
        for cid, source, creds in cameras:
            sealed = SEALER.seal(creds) if creds else None
            await records.create_camera(db, "p1", cid, name=cid, source=source, credentials=sealed)
        hub = CameraHub(db, SEALER, SETTINGS)
        await nursery.start(hub.run)
        try:
            yield hub, db
        finally:
            nursery.cancel_scope.cancel()


async def status_becomes(hub, camera, status, within=10.0):
    with trio.fail_after(within):
        while True:  # polling a state that announces nothing
            if hub.state(camera).status == status:
                break
            await trio.sleep(0.02)


def size_of(jpeg):
    return Image.open(io.BytesIO(jpeg)).size


async def test_mjpeg_parts_reach_many_consumers_over_one_connection(tmp_path):
    frames = [make_jpeg(320, 180, shade) for shade in range(5)]
    async with trio.open_nursery() as cams:
        cam = await cams.start(MjpegCamera(frames).run)
        async with hub_with(tmp_path, [("m", {"kind": "mjpeg", "url": cam.url + "/v"}, None)]) as (
            hub,
            db,
        ):
            row = records.get_camera(db, "p1", "m")
            await status_becomes(hub, row, "online")
            got: list[list[bytes]] = []

            async def consume():
                mine, seq = [], 0
                for _ in range(10):
                    frame = await hub.next_frame(row, seq)
                    assert frame.seq > seq
                    seq = frame.seq
                    mine.append(frame.jpeg)
                got.append(mine)

            async with trio.open_nursery() as consumers:
                for _ in range(20):
                    consumers.start_soon(consume)
            assert len(got) == 20
            assert all(jpeg in frames for mine in got for jpeg in mine)  # byte for byte
            assert cam.connections == 1
            assert await hub.snapshot(row) in frames
        cams.cancel_scope.cancel()


async def test_a_slow_consumer_skips_frames_instead_of_queueing(tmp_path):
    async with trio.open_nursery() as cams:
        cam = await cams.start(MjpegCamera([make_jpeg(64, 48, i) for i in range(3)]).run)
        async with hub_with(tmp_path, [("m", {"kind": "mjpeg", "url": cam.url}, None)]) as (
            hub,
            db,
        ):
            row = records.get_camera(db, "p1", "m")
            first = await hub.next_frame(row, 0)
            await trio.sleep(0.5)  # ~10 frames go by
            later = await hub.next_frame(row, first.seq)
            assert later.seq > first.seq + 3  # the latest, not the next one in a queue
        cams.cancel_scope.cancel()


async def test_http_snapshots_with_credentials_and_the_camera_going_away(tmp_path):
    jpeg = make_jpeg(640, 360)
    async with trio.open_nursery() as cams:
        cam = await cams.start(SnapshotCamera([jpeg], auth=("admin", "hunter2")).run)
        source = {"kind": "http", "url": cam.url + "/snap.jpg"}
        async with hub_with(tmp_path, [("s", source, Credentials("admin", "hunter2"))]) as (
            hub,
            db,
        ):
            row = records.get_camera(db, "p1", "s")
            await status_becomes(hub, row, "online")
            assert await hub.snapshot(row) == jpeg
            await trio.sleep(0.3)
            assert cam.requests >= 3 and cam.refused == 0
            assert cam.connections == 1  # kept alive between snapshots

            await cam.down()
            await status_becomes(hub, row, "offline")
            state = hub.state(row)
            assert "127.0.0.1" in state.error and "hunter2" not in state.error
            with pytest.raises(CameraOffline):
                await hub.snapshot(row)

            await cam.up()
            await status_becomes(hub, row, "online")
            assert await hub.snapshot(row) == jpeg
        cams.cancel_scope.cancel()


async def test_wrong_credentials_keep_the_camera_offline_with_the_reason(tmp_path):
    async with trio.open_nursery() as cams:
        cam = await cams.start(SnapshotCamera([make_jpeg(64, 48)], auth=("admin", "right")).run)
        source = {"kind": "http", "url": cam.url}
        async with hub_with(tmp_path, [("s", source, Credentials("admin", "wrong-pw"))]) as (
            hub,
            db,
        ):
            row = records.get_camera(db, "p1", "s")
            with trio.fail_after(5):
                while True:  # retried, with backoff
                    if cam.refused >= 2:
                        break
                    await trio.sleep(0.02)
            state = hub.state(row)
            assert state.status == "offline"
            assert "refused the credentials" in state.error and "wrong-pw" not in state.error
        cams.cancel_scope.cancel()


async def test_a_file_source_is_decoded_by_pyav_and_loops(tmp_path):
    video = tmp_path / "clip.mp4"
    await trio.to_thread.run_sync(write_video, video)
    async with hub_with(tmp_path, [("f", {"kind": "file", "path": str(video)}, None)]) as (
        hub,
        db,
    ):
        row = records.get_camera(db, "p1", "f")
        seq, sizes = 0, set()
        with trio.fail_after(15):
            while seq < 25:  # 10 frames at 10 fps: more than two rounds of the loop
                frame = await hub.next_frame(row, seq)
                seq = frame.seq
                sizes.add(size_of(frame.jpeg))
        assert sizes == {(64, 48)}
        assert hub.state(row).status == "online"
        assert hub.upstream_connections() == {"p1/f": 1}  # looping is not reconnecting


async def test_a_missing_file_and_an_unreachable_camera_are_offline(tmp_path):
    with trio.socket.socket() as s:  # a port nothing listens on
        await s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    cameras = [
        ("f", {"kind": "file", "path": str(tmp_path / "none.mp4")}, None),
        ("h", {"kind": "http", "url": f"http://127.0.0.1:{port}/x.jpg"}, None),
    ]
    async with hub_with(tmp_path, cameras) as (hub, db):
        for cid, reason in (("f", "cannot open"), ("h", "cannot connect")):
            row = records.get_camera(db, "p1", cid)
            with trio.fail_after(5):
                while True:  # polling a state that announces nothing
                    if not (reason not in hub.state(row).error):
                        break
                    await trio.sleep(0.02)
            assert hub.state(row).status == "offline"
            with pytest.raises(CameraOffline):
                await hub.next_frame(row, 0, timeout_s=0.1)


async def test_a_changed_source_reconnects_and_demo_cameras_need_no_connection(tmp_path):
    async with trio.open_nursery() as cams:
        a = await cams.start(SnapshotCamera([make_jpeg(64, 48)]).run)
        b = await cams.start(SnapshotCamera([make_jpeg(32, 24)]).run)
        cameras = [("s", {"kind": "http", "url": a.url}, None), ("d", {"kind": "demo"}, None)]
        async with hub_with(tmp_path, cameras) as (hub, db):
            row = records.get_camera(db, "p1", "s")
            await status_becomes(hub, row, "online")
            await records.set_camera_source(db, "p1", "s", {"kind": "http", "url": b.url}, None)
            hub.poke()
            with trio.fail_after(5):
                while True:  # polling a state that announces nothing
                    if size_of(await hub.snapshot(row)) == (32, 24):
                        break
                    await trio.sleep(0.05)
            assert hub.upstream_connections() == {"p1/s": 1}
            demo = records.get_camera(db, "p1", "d")
            assert hub.state(demo).status == "online"
            first = await hub.next_frame(demo, 0)
            assert (await hub.next_frame(demo, first.seq)).seq == first.seq + 1
        cams.cancel_scope.cancel()


async def test_a_hub_that_is_not_running_serves_demo_cameras_only(tmp_path):
    async with open_database(tmp_path / "db.sqlite") as db:
        await records.create_property(db, "p1", "P1")
        demo = await records.create_camera(db, "p1", "d", name="D", source={"kind": "demo"})
        http = await records.create_camera(
            db, "p1", "h", name="H", source={"kind": "http", "url": "http://127.0.0.1:9/x"}
        )
        hub = CameraHub(db)
        assert (await hub.snapshot(demo))[:2] == b"\xff\xd8"
        assert hub.state(http).status == "offline"
        with pytest.raises(CameraOffline):
            await hub.snapshot(http)
