"""Real camera sources end to end: a real server, the real HA plugin, cameras served here on
127.0.0.1 (an HTTP snapshot camera with credentials, an MJPEG camera, a video file decoded by
PyAV).

RTSP is not served here: Debian's ffmpeg is not installed and PyAV cannot act as an RTSP
server, so the `file` source covers the PyAV decode path that `rtsp` shares (same thread,
same decoder, same JPEG encoding; only `av.open`'s target and options differ).
"""

import io

import httpx
import trio
from PIL import Image

from pentarun.cameras.multipart import MultipartReader
from pentarun.packages.builder import pack, read_tree

from ..cameras.fakecams import MjpegCamera, SnapshotCamera, make_jpeg, write_video
from .server import Server, wait_state, wait_worker
from .test_homeassistant import HA_PLUGIN, LISTENER_ENV, ha_url

USER, PASSWORD = "cam-operator-7f3a", "pw-9c1e-never-shown"


async def camera_statuses(ha: httpx.AsyncClient) -> dict[str, str]:
    listed = await ha.get("/api/ha/v1/cameras")
    assert listed.status_code == 200, listed.text
    return {c["id"]: c["status"] for c in listed.json()["cameras"]}


async def wait_status(ha, camera: str, status: str, within: float = 20) -> None:
    with trio.move_on_after(within):
        while (await camera_statuses(ha)).get(camera) != status:
            await trio.sleep(0.1)
        return
    raise AssertionError(f"{camera} never became {status}: {await camera_statuses(ha)}")


async def mjpeg_parts(ha: httpx.AsyncClient, camera: str, count: int) -> list[bytes]:
    parts: list[bytes] = []
    with trio.fail_after(20):
        async with ha.stream("GET", f"/api/ha/v1/cameras/{camera}/mjpeg") as response:
            assert response.status_code == 200
            reader = MultipartReader(b"frame", 8 << 20)
            async for chunk in response.aiter_raw():
                parts += reader.feed(chunk)
                if len(parts) >= count:
                    break
    return parts


def assert_no_secret(text: str) -> None:
    assert PASSWORD not in text and USER not in text


async def test_real_cameras_through_the_home_assistant_port(tmp_path):
    snap_jpeg = make_jpeg(640, 360, 1)
    stream_frames = [make_jpeg(640, 360, shade) for shade in range(40, 46)]
    video = tmp_path / "var" / "camera-files" / "clip.mp4"  # file sources live there
    video.parent.mkdir(parents=True)
    await trio.to_thread.run_sync(write_video, video)
    async with trio.open_nursery() as cams:
        snap = await cams.start(SnapshotCamera([snap_jpeg], auth=(USER, PASSWORD)).run)
        mjpeg = await cams.start(MjpegCamera(stream_frames).run)
        server = await Server(tmp_path / "var", env=LISTENER_ENV).started()
        admin = server.client()
        try:
            await admin.post("/api/properties", json={"id": "p1", "name": "P1"})
            sources = {
                "snap": {
                    "kind": "http",
                    "url": f"{snap.url}/cgi/snapshot.jpg",
                    "credentials": {"username": USER, "password": PASSWORD},
                },
                "mj": {"kind": "mjpeg", "url": f"{mjpeg.url}/video.mjpg"},
                "clip": {"kind": "file", "path": str(video)},
            }
            for cid, source in sources.items():
                created = await admin.post(
                    "/api/properties/p1/cameras", json={"id": cid, "name": cid, "source": source}
                )
                assert created.status_code == 201, created.text
                assert_no_secret(created.text)
                assert created.json()["has_credentials"] is (cid == "snap")
            bad = await admin.post(
                "/api/properties/p1/cameras",
                json={
                    "id": "bad",
                    "name": "b",
                    "source": {"kind": "http", "url": f"http://u:{PASSWORD}@x/"},
                },
            )
            assert (
                bad.status_code == 400 and bad.json()["error"]["details"]["field"] == "source.url"
            )
            assert_no_secret(bad.text)

            data = pack(read_tree(HA_PLUGIN), "pentavision")
            uploaded = await admin.post(
                "/api/plugins", content=data, headers={"Content-Type": "application/zip"}
            )
            assert uploaded.status_code == 202, uploaded.text
            await wait_state(admin, "homeassistant", "VERIFIED")
            await admin.post("/api/plugins/homeassistant/enable", json={"properties": ["p1"]})
            await wait_worker(admin, "homeassistant")
            key = (await admin.post("/api/properties/p1/ha-keys", json={"name": "ha"})).json()[
                "key"
            ]
            ha = httpx.AsyncClient(
                base_url=await ha_url(server),
                headers={"Authorization": f"Bearer {key}"},
                timeout=30,
            )
            async with ha:
                for cid in sources:
                    await wait_status(ha, cid, "online")

                # snapshots: the camera's own bytes, from the core's cache
                shot = await ha.get("/api/ha/v1/cameras/snap/snapshot.jpg")
                assert shot.status_code == 200 and shot.content == snap_jpeg
                shot = await ha.get("/api/ha/v1/cameras/mj/snapshot.jpg")
                assert shot.content in stream_frames
                shot = await ha.get("/api/ha/v1/cameras/clip/snapshot.jpg")
                assert Image.open(io.BytesIO(shot.content)).size == (64, 48)

                # many MJPEG clients of one camera: one upstream connection, parts unchanged
                results: list[list[bytes]] = []

                async def client() -> None:
                    results.append(await mjpeg_parts(ha, "mj", 5))

                async with trio.open_nursery() as clients:
                    for _ in range(8):
                        clients.start_soon(client)
                assert len(results) == 8
                assert all(part in stream_frames for parts in results for part in parts)
                assert mjpeg.connections == 1 and snap.connections == 1
                clip_parts = await mjpeg_parts(ha, "clip", 3)
                assert {Image.open(io.BytesIO(p)).size for p in clip_parts} == {(64, 48)}

                # the camera goes away and comes back
                await mjpeg.down()
                await wait_status(ha, "mj", "offline")
                down = await ha.get("/api/ha/v1/cameras/mj/snapshot.jpg")
                assert down.status_code == 503 and down.content[:2] != b"\xff\xd8"
                detail = (await admin.get("/api/properties/p1/cameras/mj")).json()
                assert detail["status"] == "offline" and "127.0.0.1" in detail["status_reason"]
                await mjpeg.up()
                await wait_status(ha, "mj", "online")
                assert (await ha.get("/api/ha/v1/cameras/mj/snapshot.jpg")).content in stream_frames

                # credentials appear in no response
                seen = [
                    (await admin.get("/api/properties/p1/cameras")).text,
                    (await admin.get("/api/properties/p1/cameras/snap")).text,
                    (await ha.get("/api/ha/v1/cameras")).text,
                    (await ha.get("/api/ha/v1/cameras/snap")).text,
                    (await admin.get("/api/audit")).text,
                ]
                for text in seen:
                    assert_no_secret(text)
                listed = (await admin.get("/api/properties/p1/cameras")).json()["cameras"]
                assert {c["id"]: c["source"]["kind"] for c in listed} == {
                    "clip": "file",
                    "mj": "mjpeg",
                    "snap": "http",
                }
                assert snap.refused == 0  # the core sent the credentials to the camera

                # a new source for a camera, through the admin API
                changed = await admin.put(
                    "/api/properties/p1/cameras/snap/source",
                    json={"source": {"kind": "mjpeg", "url": f"{mjpeg.url}/other"}},
                )
                assert changed.status_code == 200 and changed.json()["has_credentials"] is False
                with trio.fail_after(20):
                    while (
                        await ha.get("/api/ha/v1/cameras/snap/snapshot.jpg")
                    ).content not in stream_frames:
                        await trio.sleep(0.1)
        finally:
            await admin.aclose()
            server.stop()
            cams.cancel_scope.cancel()
    logs = list(tmp_path.glob("server-*.log"))
    assert logs
    for path in logs:
        text = path.read_text(errors="replace")
        assert_no_secret(text)
