"""Probation over real processes: a plugin that served well, then was SIGKILLed three times (an
OOM killer, say), is quarantined for a crash loop, re-tested on its own after
`supervisor.probation_s` and comes back ENABLED, its listener bound again."""

import json
import os
import signal

import httpx
import trio

from pentarun.packages.builder import pack

from ..packages.factory import definition, source
from .server import Server, wait_state, wait_worker

ZIP = {"Content-Type": "application/zip"}
LISTENED = {
    "listener": {"name": "demo", "port": 8200},
    "routes": [{"method": "GET", "path": "/api/demo/echo", "handler": "demo.echo",
                "listener": "demo"}],
}  # fmt: skip
ENV = {
    "PENTARUN_SUPERVISOR__PROBATION_S": "1",
    "PENTARUN_SUPERVISOR__PROBATION_ATTEMPTS": "2",
    "PENTARUN_SUPERVISOR__HEALTH_INTERVAL_S": "0.2",
    "PENTARUN_SUPERVISOR__BACKOFF_INITIAL_S": "0.05",
    "PENTARUN_LISTENERS__DEMO": "127.0.0.1:0",
}


def listeners(srv: Server) -> dict[str, str]:
    return json.loads((srv.data_dir / "run.json").read_text())["listeners"]


async def listener_answers(srv: Server, key: str) -> int:
    async with httpx.AsyncClient(base_url=listeners(srv)["demo"], timeout=10) as client:
        response = await client.get("/api/demo/echo", headers={"Authorization": f"Bearer {key}"})
        return response.status_code


async def served_well(client: httpx.AsyncClient) -> None:
    """Until the worker has passed a health check (what makes a crash loop earn probation)."""
    with trio.fail_after(20):
        while not any(
            c["ok"] for c in (await client.get("/api/plugins/demo/health")).json()["checks"]
        ):
            await trio.sleep(0.05)


async def kill_worker(client: httpx.AsyncClient) -> int:
    pid = (await wait_worker(client, "demo"))["worker"]["pid"]
    os.kill(pid, signal.SIGKILL)
    return pid


async def test_three_outside_kills_end_in_probation_and_a_release(tmp_path):
    srv = await Server(tmp_path / "var", env=ENV).started()
    try:
        async with srv.client() as client:
            await client.post("/api/properties", json={"id": "p1", "name": "p1"})
            data = pack(source(definition(**LISTENED)), publisher="tests")
            assert (await client.post("/api/plugins", content=data, headers=ZIP)).status_code == 202
            await wait_state(client, "demo", "VERIFIED")
            await client.post("/api/plugins/demo/enable", json={"properties": ["p1"]})
            key = (await client.post("/api/properties/p1/ha-keys", json={"name": "t"})).json()
            await served_well(client)
            assert await listener_answers(srv, key["key"]) == 200

            killed = []
            with trio.fail_after(30):
                while (await client.get("/api/plugins/demo")).json()["state"] != "QUARANTINED":
                    detail = (await client.get("/api/plugins/demo")).json()
                    worker = detail.get("worker") or {}
                    if worker.get("state") == "RUNNING" and worker.get("pid") not in killed:
                        killed.append(await kill_worker(client))
                    await trio.sleep(0.02)
            assert len(killed) == 3
            detail = (await client.get("/api/plugins/demo")).json()
            assert "crash" in detail["reason"]
            assert "demo" not in listeners(srv)  # the port closed with the worker

            detail = await wait_state(client, "demo", "ENABLED", within=60)
            assert detail["reason"] == "verified; released by probation attempt 1"
            await wait_worker(client, "demo")
            assert detail["properties"] == ["p1"]
            with trio.fail_after(20):
                while "demo" not in listeners(srv):
                    await trio.sleep(0.05)
            assert await listener_answers(srv, key["key"]) == 200  # the port is back

            events = (await client.get("/api/plugins/demo/events")).json()["events"]
            scheduled = [e for e in events if e["type"] == "probation_scheduled"]
            assert scheduled and scheduled[-1]["next_retry_at"] is not None
            (attempt,) = [e for e in events if e["type"] == "probation_attempt"]
            assert attempt["detail"]["result"] == "passed"
            run = (
                await client.get(f"/api/plugins/demo/tests/{attempt['detail']['run_id']}")
            ).json()
            assert run["status"] == "passed"
            assert [g["gate"] for g in run["report"]["gates"]] == [
                "self", "integration", "security", "load", "recovery",
            ]  # fmt: skip
    finally:
        srv.stop()
