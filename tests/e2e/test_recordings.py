"""Recordings and motion end to end.

A sandboxed plugin records, lists and reads clips through the core lane and hears
`recording.created` and `camera.motion`; a real `pentarun serve` records through the admin API,
on request and on motion, serves the clip, keeps it across a restart and expires it.
"""

import json
from contextlib import asynccontextmanager

import msgspec
import trio

from pentarun.assembly import assemble
from pentarun.cameras.hub import CameraHub
from pentarun.cameras.motion import MotionSettings
from pentarun.config import RecordingsConfig, SecurityConfig
from pentarun.recordings.clips import read_parts
from pentarun.sandbox.launcher import Sandbox
from pentarun.store import records
from pentarun.store.db import open_database
from pentarun.supervisor.policy import Phase

from .conftest import FAST, PLUGINS, Harness, eventually
from .server import Server

PROBE = json.loads((PLUGINS / "probe" / "definition.json").read_text())
RECORDER = {
    "scopes": [*PROBE["scopes"], "recordings:read", "recordings:write"],
    "events": {"subscribe": ["camera.motion", "recording.created"], "publish": []},
}


@asynccontextmanager
async def platform(tmp_path):
    """The conftest harness's platform, with a camera hub, recordings and the motion watch."""
    sandbox = Sandbox(SecurityConfig(), tmp_path)
    assert (await trio.to_thread.run_sync(sandbox.check)).ok, sandbox.status.reason
    async with open_database(tmp_path / "pentarun.db") as db, trio.open_nursery() as nursery:
        for prop, cam in (("p1", "front"), ("p2", "back")):
            await records.create_property(db, prop, prop)
            await records.create_camera(db, prop, cam, name=cam, source={"kind": "demo"})
        hub = CameraHub(db)
        await nursery.start(hub.run)
        built = assemble(
            FAST,
            db,
            sandbox=sandbox,
            cameras=hub,
            recordings_dir=tmp_path / "recordings",
            recordings_config=RecordingsConfig(max_fps=10),
        )
        assert built.recordings is not None and built.motion is not None
        await nursery.start(built.recordings.run)
        await nursery.start(built.motion.run)
        await nursery.start(built.supervisor.run)
        try:
            yield Harness(built, db), built
        finally:
            with trio.CancelScope(shield=True):
                await built.supervisor.stop_all(5)
            nursery.cancel_scope.cancel()


async def core(actor, name, params=None, prop="p1"):
    return (await actor.call("core", prop, {"name": name, "params": params or {}})).value


async def test_a_plugin_records_lists_and_reads_clips_through_the_core(tmp_path):
    async with platform(tmp_path) as (h, built):
        recorder = await h.start("recorder", properties=("p1", "p2"), manifest=RECORDER)
        reader = await h.start("reader")  # no recordings scopes
        with trio.fail_after(15):
            await recorder.wait_for(Phase.RUNNING)
            await reader.wait_for(Phase.RUNNING)

        started = await core(recorder, "recordings.start", {"camera": "front", "duration_s": 30})
        clip_id = started["value"]["id"]
        listed = await core(recorder, "recordings.list")
        assert [a["id"] for a in listed["value"]["active"]] == [clip_id]
        await trio.sleep(1.0)
        stopped = (await core(recorder, "recordings.stop", {"camera": "front"}))["value"]
        assert stopped["id"] == clip_id and stopped["frames"] >= 2
        assert stopped["by"] == "plugin:recorder" and stopped["trigger"] == "request"

        listed = (await core(recorder, "recordings.list", {"camera": "front"}))["value"]
        assert [c["id"] for c in listed["recordings"]] == [clip_id] and listed["active"] == []
        data, offset = b"", 0
        while True:  # read in chunks, as a plugin must for a big clip
            got = (await core(recorder, "recordings.get", {"id": clip_id, "offset": offset,
                                                            "length": 64 * 1024}))["value"]  # fmt: skip
            data += got["data"]
            offset += len(got["data"])
            if offset >= got["size"]:
                break
        assert len(data) == stopped["bytes"]
        frames = [p.jpeg for p in read_parts(data)]
        assert len(frames) == stopped["frames"] and all(f[:2] == b"\xff\xd8" for f in frames)

        await eventually(lambda: built.recordings.page("p1") != [])
        seen: list = []

        async def heard() -> bool:
            seen[:] = (await recorder.call("recordings.seen", "p1", {})).value["recordings"]
            return bool(seen)

        with trio.fail_after(10):
            while not await heard():
                await trio.sleep(0.1)
        assert seen[0]["id"] == clip_id

        # confined: no clip of p1 through p2, no scope no call, unknown parameters refused
        missing = await core(recorder, "recordings.get", {"id": clip_id}, prop="p2")
        assert (missing["error"], missing["status"]) == ("not_found", 404)  # as if unknown
        assert (await core(recorder, "recordings.list", prop="p2"))["value"]["recordings"] == []
        other = await core(reader, "recordings.list", prop="p1")
        assert (other["error"], other["status"]) == ("scope_denied", 403)
        bogus = await core(recorder, "recordings.list", {"property": "p2"})
        assert bogus["status"] == 400
        unknown = await core(recorder, "recordings.get", {"id": "1700000000000-00000000"})
        assert (unknown["error"], unknown["status"]) == ("not_found", 404)
        not_mine = await core(recorder, "recordings.start", {"camera": "back"})
        assert (not_mine["error"], not_mine["status"]) == ("not_found", 404)


async def test_motion_reaches_the_subscribed_plugin_and_records_a_clip(tmp_path):
    async with platform(tmp_path) as (h, built):
        recorder = await h.start("recorder", manifest=RECORDER)
        with trio.fail_after(15):
            await recorder.wait_for(Phase.RUNNING)
        settings = MotionSettings(enabled=True, threshold=0.002, min_interval_s=30, record_s=1)
        await records.set_camera_motion(h.db, "p1", "front", msgspec.to_builtins(settings))
        built.motion.poke()

        async def events() -> list:
            return (await recorder.call("events.seen", "p1", {})).value["events"]

        with trio.fail_after(20):
            while not (seen := await events()):
                await trio.sleep(0.1)
        type_, prop, data = seen[0]
        assert (type_, prop, data["camera"]) == ("camera.motion", "p1", "front")
        with trio.fail_after(20):
            while not built.recordings.page("p1"):
                await trio.sleep(0.1)
        (clip,) = built.recordings.page("p1")
        assert (clip.trigger, clip.by, clip.camera) == ("motion", "core:motion", "front")


async def test_the_admin_api_records_serves_keeps_and_expires_clips(tmp_path):
    data_dir = tmp_path / "data"
    server = await Server(data_dir).started()
    try:
        async with server.client() as api:
            assert (
                await api.post("/api/properties", json={"id": "p1", "name": "P1"})
            ).status_code == 201
            created = await api.post(
                "/api/properties/p1/cameras",
                json={"id": "gate", "name": "Gate", "motion": {"enabled": False, "record_s": 2}},
            )
            assert created.status_code == 201, created.text
            assert created.json()["motion"]["record_s"] == 2
            turned = await api.put(
                "/api/properties/p1/cameras/gate/motion", json={"enabled": True, "threshold": 0.5}
            )
            assert turned.status_code == 200 and turned.json()["motion"]["enabled"] is True
            assert turned.json()["motion"]["record_s"] == 0  # absent: its default
            bad = await api.put("/api/properties/p1/cameras/gate/motion", json={"threshold": 2})
            assert bad.status_code == 400

            started = await api.post(
                "/api/properties/p1/cameras/gate/recordings", json={"duration_s": 30}
            )
            assert started.status_code == 201, started.text
            clip_id = started.json()["id"]
            await trio.sleep(1.0)
            stopped = await api.post("/api/properties/p1/cameras/gate/recordings/stop")
            assert stopped.status_code == 200 and stopped.json()["recording"]["id"] == clip_id
            again = await api.post("/api/properties/p1/cameras/gate/recordings/stop")
            assert again.status_code == 404

            listed = (await api.get("/api/properties/p1/recordings")).json()
            assert [c["id"] for c in listed["recordings"]] == [clip_id]
            clip = listed["recordings"][0]
            assert clip["trigger"] == "admin" and clip["by"].startswith("operator:")
            download = await api.get(f"/api/properties/p1/recordings/{clip_id}")
            assert download.status_code == 200
            assert download.headers["content-type"].startswith("multipart/x-mixed-replace")
            assert len(download.content) == clip["bytes"]
            assert len(list(read_parts(download.content))) == clip["frames"] >= 2
            assert (
                await api.get("/api/properties/p1/recordings/1700000000000-00000000")
            ).status_code == 404
            assert (await api.get("/api/properties/p1/recordings/../x")).status_code == 404
            assert (await api.get("/api/properties/nope/recordings")).status_code == 404
    finally:
        assert server.stop() == 0

    server = await Server(data_dir).started()  # the clip is kept across a restart
    try:
        async with server.client() as api:
            listed = (await api.get("/api/properties/p1/recordings")).json()
            assert [c["id"] for c in listed["recordings"]] == [clip_id]
    finally:
        assert server.stop() == 0

    expire = {
        "PENTARUN_RECORDINGS__MAX_AGE_H": "0.0001",
        "PENTARUN_RECORDINGS__RETENTION_INTERVAL_S": "1",
    }
    server = await Server(data_dir, env=expire).started()
    try:
        async with server.client() as api:
            listed = (await api.get("/api/properties/p1/recordings")).json()
            assert listed["recordings"] == []  # older than 0.36 s: gone
            assert not list((data_dir / "recordings" / "p1").glob("*.mjpeg"))
    finally:
        assert server.stop() == 0
