"""The sandbox as operators meet it: on by default, fail closed, and `off` reported everywhere."""

import trio

from pentarun.sandbox import confine

from .conftest import PLUGINS
from .server import Server, wait_worker

PROBE = ("--plugin-dir", str(PLUGINS / "probe"))


async def test_a_server_without_bubblewrap_starts_no_worker_and_says_why(tmp_path):
    # bubblewrap is looked up on PATH: without it the sandbox cannot be set up
    server = await Server(tmp_path / "var", *PROBE, env={"PATH": "/nonexistent"}).started()
    try:
        async with server.client() as client:
            ready = await client.get("/readyz")
            assert ready.status_code == 503
            sandbox = ready.json()["checks"]["sandbox"]
            assert not sandbox["ok"] and "bubblewrap" in sandbox["reason"]
            with trio.fail_after(20):
                while True:
                    detail = (await client.get("/api/plugins/probe")).json()
                    worker = detail.get("worker") or {}
                    if worker.get("state") == "STOPPED":
                        break
                    await trio.sleep(0.05)
            assert "sandbox unavailable" in worker["reason"] and worker["pid"] is None
            assert detail["sandbox"]["ok"] is False
            call = {"handler": "echo", "property": "p1"}
            assert (await client.post("/api/plugins/probe/call", json=call)).status_code >= 400
    finally:
        server.stop()


async def test_sandbox_off_is_reported_at_start_in_readyz_in_each_plugin_and_in_the_audit(
    tmp_path,
):
    env = {"PENTARUN_SECURITY__SANDBOX": "off"}
    server = await Server(tmp_path / "var", *PROBE, env=env).started()
    try:
        async with server.client() as client:
            detail = await wait_worker(client, "probe")
            assert (
                detail["sandbox"]["mode"] == "off" and "unsandboxed" in detail["sandbox"]["warning"]
            )
            sandbox = (await client.get("/readyz")).json()["checks"]["sandbox"]
            assert sandbox["mode"] == "off" and "warning" in sandbox
            audit = (await client.get("/api/audit", params={"type": "security.sandbox_off"})).json()
            assert audit["events"] and audit["events"][0]["risk_score"] > 0
        assert "unsandboxed" in server.output()  # the start log says it loudly
    finally:
        server.stop()


async def test_by_default_workers_run_sandboxed(tmp_path):
    server = await Server(tmp_path / "var", *PROBE).started()
    try:
        async with server.client() as client:
            detail = await wait_worker(client, "probe")
            assert detail["sandbox"]["ok"] and detail["sandbox"]["mode"] == "on"
            abi = confine.abi()  # Landlock, where the kernel has it, and which ABI
            expected = f"ABI {abi}" if abi else "not offered by this kernel"
            assert detail["sandbox"]["landlock"] == expected
            assert (await client.get("/readyz")).json()["checks"]["sandbox"]["ok"]
    finally:
        server.stop()
