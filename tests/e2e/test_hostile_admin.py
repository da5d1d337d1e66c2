"""Hostile input on a real server's admin API: each one a clean 4xx that changes nothing."""

from pathlib import Path

import msgspec
import pytest
import trio

from .server import Server, wait_worker

HELLO = Path(__file__).resolve().parents[2] / "plugins" / "hello"
JSON = {"Content-Type": "application/json"}


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    srv = Server(tmp_path_factory.mktemp("hostile") / "var", "--plugin-dir", str(HELLO))
    trio.run(srv.started)
    yield srv
    assert srv.stop() == 0


async def test_invalid_utf8_is_a_400_and_creates_nothing(server):
    async with server.client() as client:
        for path in ("/api/properties", "/api/operators", "/api/plugins/hello/call"):
            response = await client.post(path, content=b'{"id": "\xff\xfe", "name": "x"}')
            assert response.status_code == 400, path
            assert response.json()["error"]["code"] == "bad_request"
        assert (await client.get("/api/properties")).json()["properties"] == []


async def test_a_missing_field_is_named(server):
    async with server.client() as client:
        response = await client.post("/api/plugins/hello/approve", json={})
        assert response.status_code == 400
        assert response.json()["error"]["message"] == (
            "invalid request body: Object missing required field `digest`"
        )


async def test_hostile_configurations_are_refused_and_not_stored(server):
    async with server.client() as client:
        await wait_worker(client, "hello")
        assert (
            await client.put("/api/plugins/hello/config", json={"greeting": "hi"})
        ).status_code == 200
        deep = b'{"a": ' * 1000 + b"1" + b"}" * 1000
        nested = await client.put("/api/plugins/hello/config", content=deep, headers=JSON)
        assert nested.status_code == 400, nested.text
        huge = msgspec.json.encode({"blob": "x" * (9 * 1024 * 1024)})
        refused = await client.put("/api/plugins/hello/config", content=huge, headers=JSON)
        assert refused.status_code == 413 and refused.json()["error"]["code"] == "too_large"
        stored = (await client.get("/api/plugins/hello/config")).json()["config"]
        assert stored == {"greeting": "hi"}
        detail = (await client.get("/api/plugins/hello")).json()
        assert detail["state"] == "ENABLED" and detail["worker"]["state"] == "RUNNING"


async def test_a_million_properties_are_refused_while_healthz_answers(server):
    entries = [f"p{i:07d}" for i in range(1_000_000)]
    payload = msgspec.json.encode({"properties": entries})
    healthz: list[int] = []

    async def body():
        yield payload[: 256 * 1024]
        # the big request is under way (its headers and first bytes are sent): /healthz
        # must answer now, on another connection, before the rest is sent
        async with server.client(token=None) as probe:
            healthz.append((await probe.get("/healthz")).status_code)
        for start in range(256 * 1024, len(payload), 1024 * 1024):
            yield payload[start : start + 1024 * 1024]

    async with server.client() as client:
        headers = {**JSON, "Content-Length": str(len(payload))}
        response = await client.post("/api/plugins/hello/enable", content=body(), headers=headers)
        assert response.status_code == 413, response.text
        assert healthz == [200]
        assert (await client.get("/healthz")).status_code == 200
        assert (await client.get("/api/plugins/hello")).json()["properties"] == []
