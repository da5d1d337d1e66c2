"""The install pipeline over real HTTP: real zips, real workers, a real SQLite file."""

import base64
import importlib.util
import json
import signal
import subprocess
import sys

import httpx
import pytest
import trio

from pentarun.packages.builder import pack, sign_package
from pentarun.security import signing

from ..packages.factory import PLAN, WORKER, definition, files_of, source
from .server import Server, wait_state, wait_worker
from .wheels import make_wheel

ZIP = {"Content-Type": "application/zip"}


def versioned(
    version: str, worker: bytes = WORKER, plan: dict | None = None, **extra: bytes
) -> bytes:
    files = source(definition(version=version), **extra)
    files["worker/plugin_worker.py"] = worker
    if plan is not None:
        files["tests/test_plan.json"] = json.dumps(plan).encode()
    return pack(files, publisher="tests")


REPORTS_VERSION = WORKER.replace(
    b'return {"property": ctx.property, "params": params}',
    b'return {"property": ctx.property, "params": params, "version": VERSION}',
).replace(
    b"plugin = Plugin()",
    b'import json, pathlib\nVERSION = json.loads(pathlib.Path("definition.json").read_text())["version"]\nplugin = Plugin()',
)

BROKEN_ECHO = WORKER.replace(
    b'return {"property"', b'raise RuntimeError("broken release")\n    return {"property"'
)


async def full_run(client, run, key="demo"):
    """A test run with its whole report (the list shows summaries)."""
    return (await client.get(f"/api/plugins/{key}/tests/{run['id']}")).json()


async def setup_property(client, pid="p1"):
    assert (await client.post("/api/properties", json={"id": pid, "name": pid})).status_code == 201


async def call(client, key="demo", property_id="p1", params=None):
    return await client.post(
        f"/api/plugins/{key}/call",
        json={"handler": "demo.echo", "property": property_id, "params": params or {}},
    )


@pytest.fixture
async def server(tmp_path):
    srv = await Server(tmp_path / "var").started()
    yield srv
    srv.stop()


async def test_upload_verify_enable_call(server):
    async with server.client() as client:
        await setup_property(client)
        response = await client.post("/api/plugins", content=versioned("1.0.0"), headers=ZIP)
        assert response.status_code == 202, response.text
        assert response.json()["install"]["state"] in (
            "INSTALLING",
            "TESTING",
            "INSTALLED",
            "VERIFIED",
        )
        detail = await wait_state(client, "demo", "VERIFIED", "REJECTED")
        assert detail["state"] == "VERIFIED", detail["reason"]
        assert (await call(client)).status_code == 503  # verified, not enabled: no worker
        enabled = await client.post("/api/plugins/demo/enable", json={"properties": ["p1"]})
        assert enabled.json()["state"] == "ENABLED"
        # the instant enable returns: the worker is still starting, the call waits for it
        assert (await call(client, params={"x": 1})).json() == {
            "result": {"property": "p1", "params": {"x": 1}}
        }
        runs = (await client.get("/api/plugins/demo/tests")).json()["runs"]
        assert runs[0]["status"] == "passed"
        run = await full_run(client, runs[0])
        gates = [g["gate"] for g in run["report"]["gates"]]
        assert gates == ["self", "integration", "security", "load", "recovery"]
        assert run["report"]["gates"][3]["stats"]["calls"] == 50
        states = [
            e["state"]
            for e in (await client.get("/api/plugins/demo/events")).json()["events"]
            if e["type"] == "install_state"
        ][::-1]
        assert states[:5] == ["VALIDATING", "INSTALLING", "TESTING", "TESTING", "INSTALLED"]
        assert states[-2:] == ["VERIFIED", "ENABLED"]
        listed = (await client.get("/api/plugins")).json()["plugins"]
        assert [(p["key"], p["state"]) for p in listed] == [("demo", "ENABLED")]
        disabled = await client.post("/api/plugins/demo/disable", json={})
        assert disabled.json()["state"] == "DISABLED"
        assert (await call(client)).status_code == 503


async def test_multipart_upload_and_rejection_with_every_problem(server):
    async with server.client() as client:
        files = {"package": ("demo-1.0.0.zip", versioned("1.0.0"), "application/zip")}
        assert (await client.post("/api/plugins", files=files)).status_code == 202
        bad = pack(source(definition(key="worse", traits=[], resources={"memory_limit": 1})))
        refused = await client.post("/api/plugins", content=bad, headers=ZIP)
        assert refused.status_code == 422
        problems = refused.json()["error"]["details"]["problems"]
        assert {(p["code"], p["path"]) for p in problems} >= {
            ("manifest.no_traits", "definition.json:traits"),
            ("manifest.out_of_range", "definition.json:resources.memory_limit"),
        }
        garbage = await client.post("/api/plugins", content=b"not a zip", headers=ZIP)
        assert garbage.status_code == 422
        assert garbage.json()["error"]["details"]["problems"][0]["code"] == "archive.corrupt"
        wrong_type = await client.post(
            "/api/plugins", content=b"{}", headers={"Content-Type": "application/json"}
        )
        assert wrong_type.status_code == 400
        assert (await client.get("/api/plugins/worse")).status_code == 404
        audit = (await client.get("/api/plugins/demo")).status_code
        assert audit == 200


REQUIRES_GREETER = WORKER.replace(
    b'return {"property": ctx.property, "params": params}',
    b'import greeter\n    return {"property": ctx.property, "params": params, "greeting": greeter.greet()}',
)


async def test_requirements_wait_for_approval_then_install_offline(tmp_path):
    wheelhouse = tmp_path / "wheels"
    make_wheel(wheelhouse, "greeter", "1.0.0", "def greet():\n    return 'hi from a wheel'\n")
    srv = await Server(
        tmp_path / "var", env={"PENTARUN_INSTALL__WHEELHOUSE": str(wheelhouse)}
    ).started()
    try:
        async with srv.client() as client:
            await setup_property(client)
            data = versioned("1.0.0", REQUIRES_GREETER, **{"requirements.txt": b"greeter==1.0.0\n"})
            uploaded = (await client.post("/api/plugins", content=data, headers=ZIP)).json()
            assert uploaded["state"] == "DEPENDENCIES_PENDING"
            pending = uploaded["install"]["pending_approval"]
            assert pending["requirements"] == ["greeter==1.0.0"]
            assert pending["scopes"] == [
                {"scope": "properties:read", "level": "read", "risk": 5, "needs_approval": False}
            ]
            assert len(pending["digest"]) == 64
            assert [k for k in pending if "digest" in k] == ["digest"]  # one digest to echo
            assert not (srv.data_dir / "staging").exists() or not any(
                (srv.data_dir / "staging").iterdir()
            )
            wrong = await client.post("/api/plugins/demo/approve", json={"digest": "0" * 64})
            assert wrong.status_code == 409
            assert "echo pending_approval.digest" in wrong.json()["error"]["message"]
            package_hash = pending["package"]["sha256"]
            mistaken = await client.post("/api/plugins/demo/approve", json={"digest": package_hash})
            assert mistaken.status_code == 409
            assert "package's sha256" in mistaken.json()["error"]["message"]
            ok = await client.post("/api/plugins/demo/approve", json={"digest": pending["digest"]})
            assert ok.status_code == 200
            await client.post("/api/plugins/demo/enable", json={"properties": ["p1"]})
            detail = await wait_state(client, "demo", "ENABLED", "REJECTED")
            assert detail["state"] == "ENABLED", detail["reason"]
            await wait_worker(client, "demo")
            result = (await call(client)).json()["result"]
            assert result["greeting"] == "hi from a wheel"
            audit = (await client.get("/api/plugins/demo/events")).json()
            assert audit["events"]
    finally:
        srv.stop()
    assert importlib.util.find_spec("greeter") is None  # the host never saw the requirement


async def test_scopes_above_auto_approve_need_approval_and_can_be_rejected(server):
    async with server.client() as client:
        data = pack(source(definition(scopes=["cameras:write", "properties:read"])))
        uploaded = (await client.post("/api/plugins", content=data, headers=ZIP)).json()
        assert uploaded["state"] == "DEPENDENCIES_PENDING"
        pending = uploaded["install"]["pending_approval"]
        assert pending["scopes"] == [
            {"scope": "cameras:write", "level": "write", "risk": 30, "needs_approval": True},
            {"scope": "properties:read", "level": "read", "risk": 5, "needs_approval": False},
        ]
        assert pending["risk_score"] == 35
        rejected = await client.post("/api/plugins/demo/reject", json={"reason": "too risky"})
        assert rejected.json()["install"]["state"] == "REJECTED"
        assert (await client.get("/api/plugins/demo")).json()["reason"] == "too risky"
        with trio.fail_after(10):  # audit records are written off the request path
            while (
                len(
                    audit := (await client.get("/api/audit", params={"plugin": "demo"})).json()[
                        "events"
                    ]
                )
                < 2
            ):
                await trio.sleep(0.02)
        assert [e["type"] for e in audit][:2] == ["plugin.rejected", "package.uploaded"]
        assert audit[1]["risk_score"] == 35 and audit[0]["actor"] == "operator:root"
        only = (await client.get("/api/audit", params={"type": "plugin.rejected"})).json()["events"]
        assert len(only) == 1 and only[0]["detail"]["reason"] == "too risky"
        assert (await client.get("/api/audit", params={"since": "yesterday"})).status_code == 400


async def test_a_failing_gate_rejects_with_the_report(server):
    plan = {
        "cases": [
            *PLAN["cases"],
            {
                "name": "must fail",
                "category": "security",
                "handler": "demo.echo",
                "expect": {"ok": False},
            },
        ]
    }
    async with server.client() as client:
        await client.post("/api/plugins", content=versioned("1.0.0", plan=plan), headers=ZIP)
        detail = await wait_state(client, "demo", "REJECTED", "VERIFIED")
        assert detail["state"] == "REJECTED"
        assert detail["reason"].startswith("test gates failed: security: must fail")
        run = await full_run(
            client, (await client.get("/api/plugins/demo/tests")).json()["runs"][0]
        )
        assert run["status"] == "failed"
        security = next(g for g in run["report"]["gates"] if g["gate"] == "security")
        assert not security["ok"]
        assert any(c["name"] == "must fail" and not c["ok"] for c in security["cases"])
        enable = await client.post("/api/plugins/demo/enable", json={})
        assert enable.status_code == 409


async def test_upgrades_replace_only_once_verified_and_a_failed_one_keeps_the_old(server):
    async with server.client() as client:
        await setup_property(client)
        await client.post("/api/plugins", content=versioned("1.0.0", REPORTS_VERSION), headers=ZIP)
        await wait_state(client, "demo", "VERIFIED")
        await client.post("/api/plugins/demo/enable", json={"properties": ["p1"]})
        old_pid = (await wait_worker(client, "demo"))["worker"]["pid"]
        assert (await call(client)).json()["result"]["version"] == "1.0.0"

        failing = versioned("1.1.0", BROKEN_ECHO)
        assert (await client.post("/api/plugins", content=failing, headers=ZIP)).status_code == 202
        with trio.fail_after(60):
            while True:
                detail = (await client.get("/api/plugins/demo")).json()
                upgrade = detail.get("upgrade") or detail.get("last_upgrade")
                assert detail["state"] == "ENABLED" and detail["version"] == "1.0.0"
                assert (await call(client)).json()["result"]["version"] == "1.0.0"
                if upgrade and upgrade["state"] == "REJECTED":
                    break
                await trio.sleep(0.1)
        assert "integration" in upgrade["reason"]
        assert detail["worker"]["pid"] == old_pid

        await client.post("/api/plugins", content=versioned("2.0.0", REPORTS_VERSION), headers=ZIP)
        with trio.fail_after(60):
            while (await client.get("/api/plugins/demo")).json()["version"] != "2.0.0":
                await trio.sleep(0.1)
        detail = await wait_worker(client, "demo")
        assert detail["state"] == "ENABLED" and detail["worker"]["pid"] != old_pid
        assert (await call(client)).json()["result"]["version"] == "2.0.0"
        with trio.fail_after(10):  # the old tree goes once the old worker drained and stopped
            while len(list((server.data_dir / "plugins" / "demo").iterdir())) != 1:
                await trio.sleep(0.05)


async def test_quarantine_release_and_uninstall(server):
    async with server.client() as client:
        await setup_property(client)
        await client.post("/api/plugins", content=versioned("1.0.0"), headers=ZIP)
        await wait_state(client, "demo", "VERIFIED")
        await client.post("/api/plugins/demo/enable", json={"properties": ["p1"]})
        await wait_worker(client, "demo")
        q = await client.post("/api/plugins/demo/quarantine", json={"reason": "suspicious"})
        assert q.status_code == 200
        detail = await wait_state(client, "demo", "QUARANTINED")
        assert "suspicious" in detail["reason"]
        assert (await call(client)).status_code == 503
        assert (await client.post("/api/plugins/demo/enable", json={})).status_code == 409
        released = await client.post("/api/plugins/demo/release")
        assert released.status_code == 202
        detail = await wait_state(client, "demo", "VERIFIED", "QUARANTINED", "REJECTED")
        assert detail["state"] == "VERIFIED" and detail["reason"] == "verified; released"
        runs = (await client.get("/api/plugins/demo/tests")).json()["runs"]
        assert len(runs) == 2 and runs[0]["status"] == "passed"
        await client.post("/api/plugins/demo/enable", json={})
        await wait_worker(client, "demo")
        assert (await call(client)).status_code == 200
        assert (server.data_dir / "plugin-data" / "demo").is_dir()  # its private /data
        run_id = (await client.post("/api/plugins/demo/tests")).json()["run_id"]
        with trio.fail_after(60):
            while (await client.get(f"/api/plugins/demo/tests/{run_id}")).json()[
                "status"
            ] == "running":
                await trio.sleep(0.1)
        assert (await client.delete("/api/plugins/demo")).json() == {
            "plugin": "demo",
            "uninstalled": True,
        }
        assert (await client.get("/api/plugins/demo")).status_code == 404
        assert (await call(client)).status_code == 404
        assert not list((server.data_dir / "plugins").glob("demo/*"))
        assert not list((server.data_dir / "packages").iterdir())
        assert not (server.data_dir / "plugin-data" / "demo").exists()  # gone with it


SLOW_ECHO = WORKER.replace(
    b'    return {"property"', b'    import trio\n    await trio.sleep(0.2)\n    return {"property"'
)


async def test_server_killed_during_testing_restarts_consistent(tmp_path):
    data_dir = tmp_path / "var"
    srv = await Server(data_dir).started()
    async with srv.client() as client:
        await setup_property(client)
        await client.post("/api/plugins", content=versioned("1.0.0", SLOW_ECHO), headers=ZIP)
        await client.post("/api/plugins/demo/enable", json={"properties": ["p1"]})
        await wait_state(client, "demo", "TESTING")
    srv.stop(signal.SIGKILL)
    srv = await Server(data_dir).started()
    try:
        async with srv.client() as client:
            detail = (await client.get("/api/plugins/demo")).json()
            assert detail["state"] in ("TESTING", "INSTALLED", "VERIFIED", "ENABLED")
            assert detail["state"] != "ENABLED" or detail["install"]["active"]
            detail = await wait_state(client, "demo", "ENABLED", "REJECTED")
            assert detail["state"] == "ENABLED", detail["reason"]
            runs = (await client.get("/api/plugins/demo/tests")).json()["runs"]
            interrupted = await full_run(client, runs[-1])
            assert (
                interrupted["status"] == "failed"
                and interrupted["report"]["error"] == "interrupted by a server restart"
            )
            assert runs[0]["status"] == "passed"
            await wait_worker(client, "demo")
            assert (await call(client)).status_code == 200
    finally:
        srv.stop()


async def hanging_index(task_status=trio.TASK_STATUS_IGNORED):
    """A package index that accepts connections and never answers: pip waits."""
    listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
    task_status.started(listeners[0].socket.getsockname()[1])

    async def hang(stream):
        await trio.sleep_forever()

    await trio.serve_listeners(hang, listeners)


async def test_server_killed_during_installing_restarts_consistent(tmp_path):
    data_dir = tmp_path / "var"
    wheelhouse = tmp_path / "wheels"
    make_wheel(wheelhouse, "greeter", "1.0.0", "def greet():\n    return 'hi'\n")
    async with trio.open_nursery() as nursery:
        port = await nursery.start(hanging_index)
        srv = await Server(
            data_dir, env={"PENTARUN_INSTALL__INDEX_URL": f"http://127.0.0.1:{port}/simple"}
        ).started()
        async with srv.client() as client:
            data = versioned("1.0.0", REQUIRES_GREETER, **{"requirements.txt": b"greeter==1.0.0\n"})
            pending = (await client.post("/api/plugins", content=data, headers=ZIP)).json()[
                "install"
            ]["pending_approval"]
            await client.post("/api/plugins/demo/approve", json={"digest": pending["digest"]})
            await client.post("/api/plugins/demo/enable", json={})
            await wait_state(client, "demo", "INSTALLING")
            await trio.sleep(0.5)  # pip is now waiting on the index
        srv.stop(signal.SIGKILL)
        nursery.cancel_scope.cancel()
    srv = await Server(data_dir, env={"PENTARUN_INSTALL__WHEELHOUSE": str(wheelhouse)}).started()
    try:
        async with srv.client() as client:
            detail = (await client.get("/api/plugins/demo")).json()
            assert detail["state"] in ("INSTALLING", "TESTING", "INSTALLED", "VERIFIED", "ENABLED")
            detail = await wait_state(client, "demo", "ENABLED", "REJECTED")
            assert detail["state"] == "ENABLED", detail["reason"]
            events = (await client.get("/api/plugins/demo/events")).json()["events"]
            assert any("resumed after restart" in e["reason"] for e in events)
    finally:
        srv.stop()


def signed_package(private_pem: bytes, key_id: str, version: str = "1.0.0") -> bytes:
    return sign_package(files_of(versioned(version)), private_pem, key_id)


async def test_a_trusted_key_added_while_running_is_honoured_at_once(server):
    private_pem, public_pem = signing.generate_key()
    public_b64 = base64.b64encode(signing.load_public_key(public_pem).public_bytes_raw()).decode()
    async with server.client() as client:
        refused = await client.post(
            "/api/plugins", content=signed_package(private_pem, "acme"), headers=ZIP
        )
        assert refused.status_code == 422
        assert refused.json()["error"]["details"]["problems"][0]["code"] == (
            "signature.untrusted_key"
        )
        added = await client.post(
            "/api/trust/keys", json={"key_id": "acme", "public_key": public_b64}
        )
        assert added.status_code == 201, added.text
        assert added.json()["key_id"] == "acme" and added.json()["public_key"] == public_b64
        listed = (await client.get("/api/trust/keys")).json()["keys"]
        assert [k["key_id"] for k in listed] == ["acme"]
        accepted = await client.post(
            "/api/plugins", content=signed_package(private_pem, "acme"), headers=ZIP
        )
        assert accepted.status_code == 202, accepted.text  # no restart in between
        await wait_state(client, "demo", "VERIFIED")

        removed = await client.delete("/api/trust/keys/acme")
        assert removed.status_code == 200
        assert (await client.delete("/api/trust/keys/acme")).status_code == 404
        again = await client.post(
            "/api/plugins", content=signed_package(private_pem, "acme", "1.1.0"), headers=ZIP
        )
        assert again.status_code == 422  # removal is honoured at once too

        # a key copied into the trust directory by hand, while the server runs
        other_private, other_public = signing.generate_key()
        (server.data_dir / "trusted_keys" / "by-hand.pub").write_bytes(other_public)
        by_hand = await client.post(
            "/api/plugins", content=signed_package(other_private, "by-hand", "1.1.0"), headers=ZIP
        )
        assert by_hand.status_code == 202, by_hand.text

        with trio.fail_after(10):  # audit rows are written off the request path
            while True:
                events = (await client.get("/api/audit")).json()["events"]
                kinds = [e["type"] for e in events]
                if "trust.key_removed" in kinds:
                    break
                await trio.sleep(0.05)
        assert "trust.key_added" in kinds


LISTENED = {
    "listener": {"name": "demo", "port": 8200},
    "routes": [{"method": "GET", "path": "/api/demo/echo", "handler": "demo.echo",
                "listener": "demo"}],
}  # fmt: skip


async def test_a_source_plugin_is_validated_and_its_listener_bound(tmp_path):
    tree = tmp_path / "src"
    for name, data in source(definition(**LISTENED)).items():
        (tree / name).parent.mkdir(parents=True, exist_ok=True)
        (tree / name).write_bytes(data)
    srv = await Server(
        tmp_path / "var", "--plugin-dir", str(tree), env={"PENTARUN_LISTENERS__DEMO": "127.0.0.1:0"}
    ).started()
    try:
        async with srv.client() as client:
            detail = (await client.get("/api/plugins/demo")).json()
            assert (detail["state"], detail["reason"]) == ("ENABLED", "running from source")
            assert detail["manifest"]["listener"]["name"] == "demo"
            await setup_property(client)
            assert (await client.put("/api/plugins/demo/properties/p1")).status_code == 200
            key = (await client.post("/api/properties/p1/ha-keys", json={"name": "t"})).json()
            with trio.fail_after(20):
                while (
                    "demo"
                    not in (run := json.loads((srv.data_dir / "run.json").read_text()))["listeners"]
                ):
                    await trio.sleep(0.05)
            await wait_worker(client, "demo")
        async with httpx.AsyncClient(base_url=run["listeners"]["demo"], timeout=10) as listener:
            answer = await listener.get(
                "/api/demo/echo", headers={"Authorization": f"Bearer {key['key']}"}
            )
            assert answer.status_code == 200, answer.text
            assert answer.json()["property"] == "p1"
    finally:
        srv.stop()


def test_an_invalid_source_tree_stops_serve_with_every_problem(tmp_path):
    tree = tmp_path / "src"
    for name, data in source(definition(traits=["root"], scopes=["camera:read"])).items():
        (tree / name).parent.mkdir(parents=True, exist_ok=True)
        (tree / name).write_bytes(data)
    result = subprocess.run(
        [sys.executable, "-m", "pentarun", "serve", "--data-dir", str(tmp_path / "var"),
         "--admin-bind", "127.0.0.1:0", "--plugin-dir", str(tree)],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert result.returncode == 2
    assert "manifest.reserved_trait" in result.stderr and "did you mean 'cameras:read'" in (
        result.stderr
    )
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "var" / "run.json").exists()
