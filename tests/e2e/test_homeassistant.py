"""The Home Assistant port end to end: a real server, the real HA plugin installed through the
pipeline, real sockets, two properties with their own keys (SPEC §8)."""

import base64
import json
import os
import signal
import socket
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
import trio

from pentarun.packages.builder import pack, read_tree

from .server import Server, wait_state, wait_worker

HA_PLUGIN = Path(__file__).resolve().parents[2] / "plugins" / "homeassistant"
LISTENER_ENV = {"PENTARUN_LISTENERS__HOMEASSISTANT": "127.0.0.1:0"}


@dataclass
class Site:
    server: Server
    admin: httpx.AsyncClient
    ha_url: str
    keys: dict[str, tuple[str, str]]  # property -> (key id, key)

    def ha(self, key: str | None = None, **headers: str) -> httpx.AsyncClient:
        if key is not None:
            headers["Authorization"] = f"Bearer {key}"
        return httpx.AsyncClient(base_url=self.ha_url, headers=headers, timeout=30)


async def ha_url(server: Server) -> str:
    with trio.fail_after(20):
        while True:
            run = json.loads((server.data_dir / "run.json").read_text())
            if "homeassistant" in run["listeners"]:
                return run["listeners"]["homeassistant"]
            await trio.sleep(0.05)


async def setup_site(tmp_path, config: str = "") -> Site:
    """A server with the HA plugin for p1 and p2; `config` is TOML for `--config`."""
    if config:
        (tmp_path / "pentarun.toml").write_text(config)
        args: tuple[str, ...] = ("--config", str(tmp_path / "pentarun.toml"))
        server = await Server(tmp_path / "var", *args).started()
    else:
        server = await Server(tmp_path / "var", env=LISTENER_ENV).started()
    admin = server.client()
    for pid, camera in (("p1", "cam-a"), ("p2", "cam-b")):
        await admin.post("/api/properties", json={"id": pid, "name": f"Property {pid}"})
        await admin.post(
            f"/api/properties/{pid}/cameras", json={"id": camera, "name": camera.upper()}
        )
    await admin.post("/api/properties/p1/cameras", json={"id": "cam-c", "name": "Porch"})
    data = pack(read_tree(HA_PLUGIN), "pentavision")
    uploaded = await admin.post(
        "/api/plugins", content=data, headers={"Content-Type": "application/zip"}
    )
    assert uploaded.status_code == 202, uploaded.text
    await wait_state(admin, "homeassistant", "VERIFIED")
    await admin.post("/api/plugins/homeassistant/enable", json={"properties": ["p1", "p2"]})
    await wait_worker(admin, "homeassistant")
    keys = {}
    for pid in ("p1", "p2"):
        created = (await admin.post(f"/api/properties/{pid}/ha-keys", json={"name": "ha"})).json()
        keys[pid] = (created["id"], created["key"])
    return Site(server, admin, await ha_url(server), keys)


@pytest.fixture
async def site(tmp_path):
    s = await setup_site(tmp_path)
    yield s
    await s.admin.aclose()
    s.server.stop()


PUBLIC_URL = "https://cams.example.test:8443/ha"
TIGHT = f"""
[listeners.homeassistant]
bind = "127.0.0.1:0"
public_url = "{PUBLIC_URL}"
rate_limit = 20
rate_window_s = 60
auth_failures = 5
"""


@pytest.fixture
async def tight(tmp_path):
    """A site whose listener has a public URL, 20 requests a minute per key and 5 failed
    authentications a minute per address (the table form of `[listeners]`)."""
    s = await setup_site(tmp_path, TIGHT)
    yield s
    await s.admin.aclose()
    s.server.stop()


async def test_each_key_sees_only_its_property(site):
    for pid, cameras, foreign in (("p1", ["cam-a", "cam-c"], "cam-b"), ("p2", ["cam-b"], "cam-a")):
        async with site.ha(site.keys[pid][1]) as ha:
            listed = (await ha.get("/api/ha/v1/cameras")).json()
            assert listed["property_id"] == pid
            assert [c["id"] for c in listed["cameras"]] == cameras
            assert (
                listed["cameras"][0]["snapshot_url"]
                == f"{site.ha_url}/api/ha/v1/cameras/{cameras[0]}/snapshot.jpg"
            )
            info = (await ha.get("/api/ha/v1/info")).json()
            assert info == {
                "api_version": "1",
                "server": "pentarun",
                "property": {"id": pid, "name": f"Property {pid}"},
                "rate_limit": {"limit": 600, "window_s": 60},  # the manifest's default
            }
            own = await ha.get(f"/api/ha/v1/cameras/{cameras[0]}")
            assert own.status_code == 200 and own.json()["id"] == cameras[0]
            other = await ha.get(f"/api/ha/v1/cameras/{foreign}")
            unknown = await ha.get("/api/ha/v1/cameras/nope")
            assert other.status_code == unknown.status_code == 404
            assert other.json()["error"]["code"] == unknown.json()["error"]["code"] == "not_found"
            snap = await ha.get(f"/api/ha/v1/cameras/{foreign}/snapshot.jpg")
            assert snap.status_code == 404 and not snap.content.startswith(b"\xff\xd8")
            jpeg = await ha.get(f"/api/ha/v1/cameras/{cameras[0]}/snapshot.jpg")
            assert (
                jpeg.headers["content-type"] == "image/jpeg" and jpeg.content[:3] == b"\xff\xd8\xff"
            )


async def test_the_three_key_forms_and_refusals(site):
    key = site.keys["p1"][1]
    async with site.ha(**{"X-API-Key": key}) as ha:
        assert (await ha.get("/api/ha/v1/cameras")).status_code == 200
    basic = base64.b64encode(f"homeassistant:{key}".encode()).decode()
    async with site.ha(Authorization=f"Basic {basic}") as ha:
        assert (await ha.get("/api/ha/v1/cameras/cam-a/snapshot.jpg")).status_code == 200
    for headers in (
        {},
        {"Authorization": "Bearer pvh_wrong"},
        {"X-API-Key": "nope"},
        {"Authorization": "Basic !!!"},
    ):
        async with site.ha(**headers) as ha:
            refused = await ha.get("/api/ha/v1/cameras")
            assert refused.status_code == 401, headers
            assert refused.headers["www-authenticate"].startswith("Bearer")
            assert refused.json()["error"]["code"] == "unauthorized"
            assert "ratelimit" in refused.headers
    revoked = await site.admin.delete(f"/api/ha-keys/{site.keys['p1'][0]}")
    assert revoked.status_code == 200
    async with site.ha(key) as ha:
        assert (await ha.get("/api/ha/v1/cameras")).status_code == 401
    async with site.ha(site.keys["p2"][1]) as ha:
        assert (await ha.get("/api/ha/v1/cameras")).status_code == 200


async def test_rate_limit_answers_429_and_every_response_has_the_headers(tight):
    site = tight
    async with site.ha(site.keys["p1"][1]) as ha:
        info = (await ha.get("/api/ha/v1/info")).json()
        assert info["rate_limit"] == {"limit": 20, "window_s": 60}  # the listener's setting
        for i in range(1, 20):
            response = await ha.get("/api/ha/v1/cameras" if i % 2 else "/api/ha/v1/cameras/none")
            assert response.headers["x-ratelimit-remaining"] == str(19 - i)
            assert response.headers["ratelimit-policy"] == '"default";q=20;w=60'
            assert response.headers["ratelimit"].startswith(f'"default";r={19 - i};t=')
        limited = await ha.get("/api/ha/v1/cameras")
        assert limited.status_code == 429
        assert limited.json()["error"]["code"] == "rate_limited"
        assert 1 <= int(limited.headers["retry-after"]) <= 60
        assert limited.headers["x-ratelimit-remaining"] == "0"
    async with site.ha(site.keys["p2"][1]) as ha:  # another key has its own budget
        assert (await ha.get("/api/ha/v1/cameras")).status_code == 200


async def test_token_use_spends_the_budget_of_the_key_that_minted_it(tight):
    site = tight
    async with site.ha(site.keys["p1"][1]) as ha:
        issued = (await ha.post("/api/ha/v1/cameras/cam-a/stream-token", json={})).json()
    token = issued["token"]
    async with site.ha() as anonymous:
        for i in range(1, 20):  # the key spent one request on minting
            used = await anonymous.get(f"/api/ha/v1/cameras/cam-a/snapshot.jpg?token={token}")
            assert used.status_code == 200 and used.headers["x-ratelimit-remaining"] == str(19 - i)
        spent = await anonymous.get(f"/api/ha/v1/cameras/cam-a/snapshot.jpg?token={token}")
        assert spent.status_code == 429 and "retry-after" in spent.headers
    async with site.ha(site.keys["p1"][1]) as ha:  # one budget: the key itself is spent too
        assert (await ha.get("/api/ha/v1/cameras")).status_code == 429
    async with site.ha(site.keys["p2"][1]) as ha:
        assert (await ha.get("/api/ha/v1/cameras")).status_code == 200


async def test_failed_attempts_from_one_address_get_429_even_with_a_good_key(tight):
    site = tight
    async with site.ha(**{"X-API-Key": "pvh_guess"}) as guesser:
        for i in range(5):
            refused = await guesser.get("/api/ha/v1/cameras")
            assert refused.status_code == 401
            assert refused.headers["x-ratelimit-remaining"] == str(4 - i)
        blocked = await guesser.get("/api/ha/v1/cameras")
        assert blocked.status_code == 429 and 1 <= int(blocked.headers["retry-after"]) <= 60
    async with site.ha(site.keys["p1"][1]) as ha:  # same address (127.0.0.1): blocked as well
        blocked = await ha.get("/api/ha/v1/cameras")
        assert blocked.status_code == 429 and blocked.json()["error"]["code"] == "rate_limited"
    assert (await site.admin.get("/healthz")).status_code == 200  # the admin API is not touched


async def test_handed_out_urls_use_the_public_url_never_the_host_header(tight):
    site = tight
    forged = {"Host": "evil.example", "X-Forwarded-Host": "evil.example"}
    async with site.ha(site.keys["p1"][1], **forged) as ha:
        listed = (await ha.get("/api/ha/v1/cameras")).json()
        assert listed["cameras"][0]["snapshot_url"] == (
            f"{PUBLIC_URL}/api/ha/v1/cameras/cam-a/snapshot.jpg"
        )
        issued = await ha.post("/api/ha/v1/cameras/cam-a/stream-token", json={})
        assert issued.status_code == 201 and "evil" not in issued.text
        assert issued.json()["urls"]["mjpeg"].startswith(f"{PUBLIC_URL}/api/ha/v1/cameras/cam-a/")


async def test_without_a_public_url_urls_name_the_bound_address(site):
    forged = {"Host": "evil.example:666"}
    async with site.ha(site.keys["p1"][1], **forged) as ha:
        listed = await ha.get("/api/ha/v1/cameras")
        assert listed.status_code == 200 and "evil" not in listed.text
        assert listed.json()["cameras"][0]["snapshot_url"].startswith(f"{site.ha_url}/api/ha/v1/")
        issued = await ha.post("/api/ha/v1/cameras/cam-a/stream-token", json={})
        assert "evil" not in issued.text
        assert issued.json()["urls"]["snapshot"].startswith(f"{site.ha_url}/api/ha/v1/")


async def test_deeply_nested_json_is_a_400_and_the_port_serves_on(site):
    async with site.ha(site.keys["p1"][1]) as ha:
        deep = await ha.post(
            "/api/ha/v1/cameras/cam-a/stream-token",
            content=b"[" * 1000 + b"]" * 1000,
            headers={"Content-Type": "application/json"},
        )
        assert deep.status_code == 400 and deep.json()["error"]["code"] == "bad_request"
        for bad in (b"\xff\xfe", b'{"ttl_s": '):
            answer = await ha.post("/api/ha/v1/cameras/cam-a/stream-token", content=bad)
            assert answer.status_code == 400
        huge = await ha.post("/api/ha/v1/cameras/cam-a/stream-token", content=b" " * 200_000)
        assert huge.status_code == 413
    async with site.ha(site.keys["p1"][1]) as ha:
        assert (await ha.get("/api/ha/v1/cameras")).status_code == 200


async def test_a_stream_token_dies_with_its_key(site):
    key_id, key = site.keys["p1"]
    async with site.ha(key) as ha:
        issued = (
            await ha.post("/api/ha/v1/cameras/cam-a/stream-token", json={"ttl_s": 86400})
        ).json()
    snapshot = f"/api/ha/v1/cameras/cam-a/snapshot.jpg?token={issued['token']}"
    async with site.ha() as anonymous:
        assert (await anonymous.get(snapshot)).status_code == 200
        assert (await site.admin.delete(f"/api/ha-keys/{key_id}")).status_code == 200
        refused = await anonymous.get(snapshot)
        assert refused.status_code == 403 and not refused.content.startswith(b"\xff\xd8")
        assert refused.json()["error"]["details"]["reason"] == "key_revoked"
        with trio.fail_after(10):
            async with anonymous.stream("GET", issued["urls"]["mjpeg"]) as stream:
                assert stream.status_code == 403


async def test_stream_tokens(site):
    async with site.ha(site.keys["p1"][1]) as ha:
        issued = await ha.post(
            "/api/ha/v1/cameras/cam-a/stream-token",
            json={"stream": "main", "protocol": "mjpeg", "ttl_s": 60},
        )
        assert issued.status_code == 201
        body = issued.json()
        assert body["expires_in"] == 60 and set(body["urls"]) == {"mjpeg", "snapshot"}
        short = (await ha.post("/api/ha/v1/cameras/cam-a/stream-token", json={"ttl_s": 1})).json()
        assert (await ha.post("/api/ha/v1/cameras/cam-b/stream-token", json={})).status_code == 404
    async with site.ha() as anonymous:  # the token alone authorizes its camera
        ok = await anonymous.get(f"/api/ha/v1/cameras/cam-a/snapshot.jpg?token={body['token']}")
        assert ok.status_code == 200 and ok.content[:2] == b"\xff\xd8"
        wrong = await anonymous.get(f"/api/ha/v1/cameras/cam-c/snapshot.jpg?token={body['token']}")
        assert wrong.status_code == 403 and not wrong.content.startswith(b"\xff\xd8")
        forged = await anonymous.get("/api/ha/v1/cameras/cam-a/snapshot.jpg?token=abc.def.ghi")
        assert forged.status_code == 403
        not_here = await anonymous.get(f"/api/ha/v1/cameras?token={body['token']}")
        assert not_here.status_code == 401  # only routes that declare token_param take tokens
        await trio.sleep(1.1)
        expired = await anonymous.get(
            f"/api/ha/v1/cameras/cam-a/snapshot.jpg?token={short['token']}"
        )
        assert (
            expired.status_code == 403 and expired.json()["error"]["details"]["reason"] == "expired"
        )


async def test_worker_killed_mid_traffic_comes_back_with_its_state(site):
    key = site.keys["p1"][1]
    pid = (await wait_worker(site.admin, "homeassistant"))["worker"]["pid"]
    statuses: list[int] = []
    async with site.ha(key) as ha:
        assert (await ha.post("/api/ha/v1/cameras/cam-a/stream-token", json={})).status_code == 201

        async def traffic() -> None:
            for _ in range(20):
                statuses.append((await ha.get("/api/ha/v1/cameras/cam-a")).status_code)
                await trio.sleep(0.02)

        async with trio.open_nursery() as nursery:
            nursery.start_soon(traffic)
            await trio.sleep(0.1)
            os.kill(pid, signal.SIGKILL)
        detail = await wait_worker(site.admin, "homeassistant")
        assert detail["worker"]["pid"] != pid and detail["worker"]["restarts"] >= 1
        assert statuses and set(statuses) == {200}  # GETs ride out the restart
        assert (await ha.get("/api/ha/v1/cameras")).status_code == 200
        call = await site.admin.post(
            "/api/plugins/homeassistant/call", json={"handler": "ha.info", "property": "p1"}
        )
        assert call.status_code == 200
    events = (await site.admin.get("/api/plugins/homeassistant/events")).json()["events"]
    assert any("killed by signal 9" in e["reason"] for e in events)


async def test_keys_and_assignments_survive_a_restart(tmp_path):
    s = await setup_site(tmp_path)
    key = s.keys["p2"][1]
    await s.admin.aclose()
    s.server.stop()
    server = await Server(tmp_path / "var", env=LISTENER_ENV).started()
    try:
        async with server.client() as admin:
            detail = await wait_worker(admin, "homeassistant")
            assert detail["state"] == "ENABLED" and detail["properties"] == ["p1", "p2"]
        async with httpx.AsyncClient(
            base_url=await ha_url(server), headers={"Authorization": f"Bearer {key}"}
        ) as ha:
            listed = await ha.get("/api/ha/v1/cameras")
            assert listed.status_code == 200 and listed.json()["property_id"] == "p2"
    finally:
        server.stop()


async def test_disabling_the_plugin_closes_its_port(site):
    await site.admin.post("/api/plugins/homeassistant/disable", json={})
    with trio.fail_after(10):
        while (
            "homeassistant"
            in json.loads((site.server.data_dir / "run.json").read_text())["listeners"]
        ):
            await trio.sleep(0.05)
    async with site.ha(site.keys["p1"][1]) as ha:
        with pytest.raises(httpx.ConnectError):
            await ha.get("/api/ha/v1/cameras")


async def read_frames(chunks, count: int) -> tuple[list[bytes], float, int]:
    """`count` JPEG frames from a multipart/x-mixed-replace stream; seconds and bytes it took."""
    buffer, frames, total = b"", [], 0
    start = trio.current_time()
    async for chunk in chunks:
        total += len(chunk)
        buffer += chunk
        while (begin := buffer.find(b"\xff\xd8")) >= 0 and (
            end := buffer.find(b"\xff\xd9", begin)
        ) >= 0:
            frames.append(buffer[begin : end + 2])
            buffer = buffer[end + 2 :]
        if len(frames) >= count:
            break
    return frames, trio.current_time() - start, total


async def test_mjpeg_stream_with_a_token_and_with_basic_auth(site):
    key = site.keys["p1"][1]
    async with site.ha(key) as ha:
        token = (await ha.post("/api/ha/v1/cameras/cam-a/stream-token", json={})).json()["urls"][
            "mjpeg"
        ]
    async with site.ha() as anonymous:
        with trio.fail_after(10):  # Home Assistant's mjpeg still-image cut-out waits 10 s at most
            async with anonymous.stream("GET", token) as response:
                assert response.status_code == 200
                assert (
                    response.headers["content-type"] == "multipart/x-mixed-replace; boundary=frame"
                )
                chunks = response.aiter_raw()
                first, took_first, _ = await read_frames(chunks, 1)
                assert took_first < 2 and first[0][:3] == b"\xff\xd8\xff"
                frames, took, size = await read_frames(chunks, 4)
                assert len(frames) == 4 and size / took > 10 * 1024  # at least ~10 KiB/s
        wrong = await anonymous.get(token.replace("/cam-a/", "/cam-c/"))
        assert wrong.status_code == 403 and not wrong.content.startswith(b"--frame")
        basic = base64.b64encode(f"ha:{key}".encode()).decode()
        with trio.fail_after(10):
            async with anonymous.stream(
                "GET",
                "/api/ha/v1/cameras/cam-c/mjpeg?fps=10",
                headers={"Authorization": f"Basic {basic}"},
            ) as response:
                frames, _, _ = await read_frames(response.aiter_raw(), 2)
                assert len(frames) == 2
        foreign = await anonymous.get(
            "/api/ha/v1/cameras/cam-b/mjpeg", headers={"Authorization": f"Basic {basic}"}
        )
        assert foreign.status_code == 404
    # the clients left: the worker stopped streaming and serves on
    async with site.ha(key) as ha:
        assert (await ha.get("/api/ha/v1/cameras")).status_code == 200
    logs = (await site.admin.get("/api/plugins/homeassistant/logs")).json()["lines"]
    assert not any("stream" in line["message"] and "failed" in line["message"] for line in logs)


async def test_bench_metrics_and_the_live_feed(site):
    async with site.ha(site.keys["p1"][1]) as ha:
        for _ in range(20):
            assert (await ha.get("/api/ha/v1/cameras")).status_code == 200
        assert (await ha.get("/api/ha/v1/cameras/nope")).status_code == 404
    await site.admin.get("/api/bench")  # first look: the CPU baseline
    bench = (await site.admin.get("/api/bench")).json()
    entry = next(p for p in bench["plugins"] if p["plugin"] == "homeassistant")
    assert entry["calls"] == 21 and entry["error_rate"] == 0.0  # a 404 is a correct answer
    assert 0 < entry["p50_ms"] <= entry["p95_ms"] <= entry["p99_ms"]
    assert (
        entry["tier"] == "platinum" and entry["memory_mb"] > 5 and entry["cpu_percent"] is not None
    )
    async with site.server.client(token=None) as anonymous:
        text = (await anonymous.get("/metrics")).text
    assert 'pentarun_worker_up{plugin="homeassistant"} 1' in text
    assert 'pentarun_plugin_calls_total{plugin="homeassistant"} 21' in text
    assert 'pentarun_plugins{state="ENABLED"} 1' in text
    assert "# TYPE pentarun_plugin_call_latency_seconds summary" in text

    seen: list[tuple[str, dict]] = []
    async with site.server.client() as watcher:
        with trio.fail_after(20):
            async with watcher.stream("GET", "/api/feed") as feed:
                assert feed.headers["content-type"].startswith("text/event-stream")
                lines = feed.aiter_lines()
                assert (await lines.__anext__()) == ": connected"
                await site.admin.post(
                    "/api/plugins/homeassistant/quarantine", json={"reason": "test"}
                )
                event_type = ""
                async for line in lines:
                    if line.startswith("event: "):
                        event_type = line.removeprefix("event: ")
                    elif line.startswith("data: "):
                        seen.append((event_type, json.loads(line.removeprefix("data: "))))
                        if event_type == "plugin.quarantined":
                            break
    quarantined = dict(seen)["plugin.quarantined"]
    assert quarantined["plugin"] == "homeassistant" and "test" in quarantined["reason"]
    assert quarantined["detail"]["evidence"]["last_exit"] is not None


async def test_a_taken_port_is_reported_and_the_server_keeps_serving(tmp_path):
    holder = socket.socket()
    holder.bind(("127.0.0.1", 0))
    holder.listen()
    port = holder.getsockname()[1]
    try:
        server = await Server(
            tmp_path / "var", env={"PENTARUN_LISTENERS__HOMEASSISTANT": f"127.0.0.1:{port}"}
        ).started()
        try:
            async with server.client() as admin:
                await admin.post("/api/properties", json={"id": "p1", "name": "One"})
                data = pack(read_tree(HA_PLUGIN), "pentavision")
                await admin.post(
                    "/api/plugins", content=data, headers={"Content-Type": "application/zip"}
                )
                await wait_state(admin, "homeassistant", "VERIFIED")
                enabled = await admin.post(
                    "/api/plugins/homeassistant/enable", json={"properties": ["p1"]}
                )
                assert enabled.status_code == 200
                events = (await admin.get("/api/plugins/homeassistant/events")).json()["events"]
                failed = [e for e in events if e["type"] == "listener_failed"]
                assert failed and "Address already in use" in failed[0]["reason"]
                assert (await admin.get("/healthz")).status_code == 200
                assert json.loads((server.data_dir / "run.json").read_text())["listeners"] == {}
        finally:
            assert server.stop() == 0
    finally:
        holder.close()
