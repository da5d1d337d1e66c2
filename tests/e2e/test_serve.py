"""`pentarun serve` as a real process: real sockets, a real SQLite file, real workers."""

import os
import signal
import socket
import stat
import time
from pathlib import Path

import pytest
import trio

from .conftest import PLUGINS
from .server import Server, wait_worker


async def probe_serving(client, *properties: str) -> dict:
    """Create the properties, assign the probe plugin to them, wait for its worker."""
    for pid in properties:
        await client.post("/api/properties", json={"id": pid, "name": pid})
        await client.put(f"/api/plugins/probe/properties/{pid}")
    return await wait_worker(client, "probe")


@pytest.fixture
def data_dir(tmp_path):
    return tmp_path / "var"


async def test_serve_runs_a_plugin_from_source_and_calls_it(data_dir):
    server = await Server(data_dir, "--plugin-dir", str(PLUGINS / "probe")).started()
    try:
        assert stat.S_IMODE((data_dir / "admin.token").stat().st_mode) == 0o600
        async with server.client() as client:
            assert (await client.get("/healthz")).status_code == 200
            assert (await client.get("/readyz")).json()["ready"] is True
            assert (
                await client.post("/api/properties", json={"id": "p1", "name": "One"})
            ).status_code == 201
            assert (await client.put("/api/plugins/probe/properties/p1")).status_code == 200
            detail = await wait_worker(client, "probe")
            assert detail["properties"] == ["p1"] and detail["worker"]["pid"] > 0
            call = {"handler": "store.roundtrip", "property": "p1", "params": {"set": 5}}
            response = await client.post("/api/plugins/probe/call", json=call)
            assert response.json() == {"result": {"value": 5, "keys": ["value"]}}
            raw = await client.post(
                "/api/plugins/probe/call", json={"handler": "raw", "property": "p1"}
            )
            assert raw.status_code == 201 and raw.content == b"\x89PNG"
            assert raw.headers["content-type"] == "image/png" and raw.headers["x-probe"] == "1"
            failed = await client.post(
                "/api/plugins/probe/call", json={"handler": "fail", "property": "p1"}
            )
            assert failed.status_code == 404
            assert failed.json()["error"]["code"] == "not_found"
            other = await client.post(
                "/api/plugins/probe/call", json={"handler": "echo", "property": "p2"}
            )
            assert other.status_code == 403
            assert other.json()["error"]["code"] == "property_not_assigned"
            bad = await client.post("/api/plugins/probe/call", content=b"{not json")
            assert bad.status_code == 400 and bad.json()["error"]["code"] == "bad_request"
            missing = await client.post("/api/plugins/probe/call", json={"property": "p1"})
            assert missing.status_code == 400 and "handler" in missing.json()["error"]["message"]
            assert (await client.get("/api/plugins/nope")).status_code == 404
            assert (await client.get("/api/nowhere")).json()["error"]["code"] == "not_found"
            events = (await client.get("/api/plugins/probe/events")).json()["events"]
            assert any(e["state"] == "RUNNING" for e in events)
        async with server.client(token=None) as anonymous:
            refused = await anonymous.post("/api/plugins/probe/call", json=call)
            assert refused.status_code == 401 and "Bearer" in refused.headers["www-authenticate"]
            wrong = await anonymous.get(
                "/api/plugins", headers={"Authorization": "Bearer pvo_nope"}
            )
            assert wrong.status_code == 401
        pid = detail["worker"]["pid"]
    finally:
        assert server.stop() == 0
    with pytest.raises(ProcessLookupError):  # the worker was stopped with the server
        os.kill(pid, 0)


async def test_state_and_token_survive_a_restart(data_dir):
    server = await Server(data_dir, "--plugin-dir", str(PLUGINS / "probe")).started()
    try:
        async with server.client() as client:
            await probe_serving(client, "p1")
            call = {"handler": "store.roundtrip", "property": "p1", "params": {"set": "kept"}}
            assert (await client.post("/api/plugins/probe/call", json=call)).status_code == 200
    finally:
        server.stop(signal.SIGINT)
    assert not (data_dir / "run.json").exists()
    token = server.token
    server = await Server(data_dir, "--plugin-dir", str(PLUGINS / "probe")).started()
    try:
        assert server.token == token
        async with server.client() as client:
            await wait_worker(client, "probe")
            call = {"handler": "store.roundtrip", "property": "p1"}
            result = (await client.post("/api/plugins/probe/call", json=call)).json()
            assert result == {"result": {"value": "kept", "keys": ["value"]}}
    finally:
        server.stop()


async def test_demo_serves_the_hello_plugin(data_dir):
    server = await Server(data_dir, "--demo").started()
    try:
        async with server.client() as client:
            await wait_worker(client, "hello")
            call = {"handler": "hello", "property": "demo", "params": {"name": "Ada"}}
            result = (await client.post("/api/plugins/hello/call", json=call)).json()["result"]
            assert result["greeting"] == "Hello, Ada!" and result["property"]["id"] == "demo"
    finally:
        server.stop()
    demo_key = (data_dir / "demo-ha.key").read_text()
    assert stat.S_IMODE((data_dir / "demo-ha.key").stat().st_mode) == 0o600
    server = await Server(data_dir, "--demo").started()  # a second demo start reuses its key
    try:
        async with server.client() as client:
            keys = (await client.get("/api/properties/demo/ha-keys")).json()["keys"]
            assert len(keys) == 1
        assert (data_dir / "demo-ha.key").read_text() == demo_key
    finally:
        server.stop()


async def test_a_crash_looping_plugin_leaves_the_server_serving(data_dir):
    server = await Server(
        data_dir,
        "--plugin-dir",
        str(PLUGINS / "crashy"),
        "--plugin-dir",
        str(PLUGINS / "probe"),
        env={"PENTARUN_SUPERVISOR__BACKOFF_INITIAL_S": "0.05"},
    ).started()
    try:
        async with server.client() as client:
            await client.post("/api/properties", json={"id": "p1", "name": "One"})
            for key in ("crashy", "probe"):
                await client.put(f"/api/plugins/{key}/properties/p1")
            await wait_worker(client, "probe")
            echo = {"handler": "echo", "property": "p1"}
            with trio.fail_after(15):
                while True:
                    detail = (await client.get("/api/plugins/crashy")).json()
                    if detail["state"] == "QUARANTINED":
                        break
                    response = await client.post("/api/plugins/probe/call", json=echo)
                    assert response.status_code == 200
            assert detail["worker"]["quarantine_rule"] == "crash_loop"
            assert detail["worker"]["last_exit"] == "exited with code 3"
            assert (await client.get("/healthz")).status_code == 200
            call = await client.post("/api/plugins/crashy/call", json=echo)
            assert call.status_code == 503
            assert call.json()["error"]["details"]["phase"] == "QUARANTINED"
    finally:
        server.stop()


def process_gone(pid: int) -> bool:
    """True once `pid` has exited (a zombie waiting for a reaper counts as gone)."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except FileNotFoundError:
        return True
    return "\nState:\tZ" in status


async def test_workers_exit_when_the_server_is_killed(data_dir):
    server = await Server(data_dir, "--plugin-dir", str(PLUGINS / "probe")).started()
    async with server.client() as client:
        pid = (await wait_worker(client, "probe"))["worker"]["pid"]
    server.stop(signal.SIGKILL)
    with trio.fail_after(10):
        while not process_gone(pid):
            await trio.sleep(0.05)


def read_response(sock) -> tuple[bytes, dict[bytes, bytes], bytes]:
    """One whole HTTP/1.1 response (Content-Length framed) from a raw socket."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionError("closed before a response")
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    status, *lines = head.split(b"\r\n")
    headers = {k.strip().lower(): v.strip() for k, v in (line.split(b":", 1) for line in lines)}
    while len(body) < int(headers.get(b"content-length", b"0")):
        body += sock.recv(65536)
    return status, headers, body


async def test_an_early_answer_never_hangs_the_keep_alive_connection(data_dir):
    """quart-trio answering before the body arrived used to hang the connection's next request."""

    server = await Server(data_dir).started()
    host, port = server.url.removeprefix("http://").rsplit(":", 1)
    body = b'{"handler": "x", "property": "p"}'
    head = (
        b"POST /api/plugins/x/call HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\n"
        b"Content-Length: %d\r\n\r\n" % len(body)
    )
    second = b"GET /api/plugins HTTP/1.1\r\nHost: t\r\nAuthorization: Bearer pvo_nope\r\n\r\n"

    def exchange(body_delay: float | None) -> list[bytes]:
        with socket.create_connection((host, int(port)), timeout=10) as sock:
            sock.sendall(head)
            if body_delay is not None:
                time.sleep(body_delay)
                sock.sendall(body)
            status, headers, _ = read_response(sock)
            assert status.startswith(b"HTTP/1.1 401")
            if headers.get(b"connection") == b"close":
                return [b"closed"]
            sock.sendall(second)
            return [read_response(sock)[0]]

    try:
        for delay in (0.0, 0.3):  # body with the head, body after the answer
            assert (await trio.to_thread.run_sync(exchange, delay))[0].startswith(b"HTTP/1.1 401")
        # a body that never comes: the answer says close, so the client knows to reconnect
        assert await trio.to_thread.run_sync(exchange, None) == [b"closed"]
    finally:
        server.stop()


async def test_config_is_validated_stored_pushed_live_and_survives_restarts(data_dir):
    server = await Server(data_dir, "--plugin-dir", str(PLUGINS / "probe")).started()
    try:
        async with server.client() as client:
            await probe_serving(client, "p1")
            current = (await client.get("/api/plugins/probe/config")).json()
            assert current["config"] == {} and current["schema"]["additionalProperties"] is False
            refused = await client.put("/api/plugins/probe/config", json={"fps": 0, "colour": 1})
            assert refused.status_code == 422
            problems = refused.json()["error"]["details"]["problems"]
            assert {p["path"] for p in problems} == {"fps", ""}
            assert (
                await client.put("/api/plugins/probe/config", content=b"[1]")
            ).status_code == 422
            assert (
                await client.put("/api/plugins/probe/config", json={"fps": 5})
            ).status_code == 200
            echo = {"handler": "config", "property": "p1"}
            with trio.fail_after(5):
                while not (
                    seen := (await client.post("/api/plugins/probe/call", json=echo)).json()[
                        "result"
                    ]
                )["changes"]:
                    await trio.sleep(0.02)
            assert seen == {"config": {"fps": 5}, "changes": [{"fps": 5}]}
            await client.post("/api/plugins/probe/call", json={"handler": "exit", "property": "p1"})
            await trio.sleep(0.3)
            await wait_worker(client, "probe")
            restarted = (await client.post("/api/plugins/probe/call", json=echo)).json()["result"]
            assert restarted == {
                "config": {"fps": 5},
                "changes": [],
            }  # new worker: config in Welcome
    finally:
        server.stop()


async def test_platform_events_over_the_admin_api(data_dir):
    server = await Server(data_dir, "--plugin-dir", str(PLUGINS / "probe")).started()
    try:
        async with server.client() as client:
            await probe_serving(client, "p1")
            await client.post("/api/properties", json={"id": "p2", "name": "p2"})
            event = {"type": "camera.motion", "property": "p1", "data": {"camera": "front"}}
            published = await client.post("/api/events", json=event)
            assert published.status_code == 202 and published.json()["delivered"] == 1
            other = await client.post("/api/events", json={**event, "property": "p2"})
            assert other.json()["delivered"] == 0
            bad = await client.post("/api/events", json={**event, "type": "motion"})
            assert bad.status_code == 400
            missing = await client.post("/api/events", json={**event, "property": "nope"})
            assert missing.status_code == 404
            seen = {"handler": "events.seen", "property": "p1"}
            with trio.fail_after(5):
                while not (await client.post("/api/plugins/probe/call", json=seen)).json()[
                    "result"
                ]["events"]:
                    await trio.sleep(0.02)
            result = (await client.post("/api/plugins/probe/call", json=seen)).json()["result"]
            assert result["events"] == [["camera.motion", "p1", {"camera": "front"}]]
    finally:
        server.stop()
