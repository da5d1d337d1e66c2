"""Integrity at every start, end to end: a real server, real installs, a tree changed while the
server was down. The changed plugin is QUARANTINED with the evidence and none of its code runs.

The server runs with `security.sandbox = "off"` here: that is where a changed tree could do the
most, and where a worker can leave a trace outside its tree (each start appends a line to a
file of the test), so "none of its code ran" can be observed.
"""

from pathlib import Path

from pentarun.packages.builder import pack

from ..packages.factory import WORKER, definition, source
from .server import Server, wait_state, wait_worker
from .test_install import REQUIRES_GREETER, ZIP, call, setup_property
from .wheels import make_wheel

UNSANDBOXED = {"PENTARUN_SECURITY__SANDBOX": "off"}


def counting(worker: bytes, starts: Path) -> bytes:
    """The worker, appending a line to `starts` each time it starts."""
    line = f"open({str(starts)!r}, 'a').write('started\\n')\n".encode()
    return worker.replace(b"plugin = Plugin()", line + b"plugin = Plugin()")


def package_with(worker: bytes, **extra: bytes) -> bytes:
    files = source(definition(), **extra)
    files["worker/plugin_worker.py"] = worker
    return pack(files, publisher="tests")


def installed_tree(data_dir: Path) -> Path:
    (tree,) = (data_dir / "plugins" / "demo").iterdir()
    return tree


def append(path: Path, text: str) -> None:
    with open(path, "a") as file:
        file.write(text)


def start_count(starts: Path) -> int:
    return len(starts.read_text().splitlines()) if starts.exists() else 0


async def restart(srv: Server, env: dict[str, str]) -> Server:
    srv.stop()
    return await Server(srv.data_dir, env=env).started()


async def events_of(client, kind):
    found = (await client.get("/api/plugins/demo/events")).json()["events"]
    return [e for e in found if e["type"] == kind]


async def test_a_worker_changed_while_the_server_was_down_is_quarantined_unstarted(tmp_path):
    starts, marker = tmp_path / "starts.txt", tmp_path / "tampered-code-ran"
    srv = await Server(tmp_path / "var", env=UNSANDBOXED).started()
    try:
        async with srv.client() as client:
            await setup_property(client)
            uploaded = await client.post(
                "/api/plugins", content=package_with(counting(WORKER, starts)), headers=ZIP
            )
            assert uploaded.status_code == 202, uploaded.text
            assert (await wait_state(client, "demo", "VERIFIED", "REJECTED"))["state"] == "VERIFIED"
            await client.post("/api/plugins/demo/enable", json={"properties": ["p1"]})
            await wait_worker(client, "demo")
            assert (await call(client)).status_code == 200
        # an untouched tree starts again at the next server start (no false alarm)
        srv = await restart(srv, UNSANDBOXED)
        async with srv.client() as client:
            await wait_worker(client, "demo")
            assert (await call(client)).status_code == 200
        seen = start_count(starts)
        assert seen >= 2  # the gates' workers count too

        srv.stop()
        worker = installed_tree(srv.data_dir) / "worker" / "plugin_worker.py"
        append(worker, f"\nopen({str(marker)!r}, 'w').write('ran')\n")
        srv = await Server(srv.data_dir, env=UNSANDBOXED).started()
        async with srv.client() as client:
            detail = await wait_state(client, "demo", "QUARANTINED", within=30)
            assert "integrity check before start failed" in detail["reason"]
            assert "changed worker/plugin_worker.py" in detail["reason"]
            assert detail["worker"] is None  # no actor, no process
            assert (await call(client)).status_code == 503
            (event,) = await events_of(client, "integrity_failed")
            assert event["detail"]["changed"] == ["worker/plugin_worker.py"]
            assert event["detail"]["missing"] == [] and event["detail"]["extra"] == []
            audit = await client.get("/api/audit", params={"type": "plugin.integrity_failed"})
            assert [row["plugin"] for row in audit.json()["events"]] == ["demo"]
            # a release re-checks before its test gates: still refused, still nothing runs
            assert (await client.post("/api/plugins/demo/release")).status_code == 202
            detail = await wait_state(client, "demo", "QUARANTINED", within=30)
            assert "release failed" in detail["reason"], detail["reason"]
            assert len(await events_of(client, "integrity_failed")) == 2
        assert not marker.exists()
        assert start_count(starts) == seen  # neither the old code nor the appended line ran
    finally:
        srv.stop()


async def test_a_requirement_changed_in_site_is_caught(tmp_path):
    wheelhouse = tmp_path / "wheels"
    make_wheel(wheelhouse, "greeter", "1.0.0", "def greet():\n    return 'hi from a wheel'\n")
    env = {**UNSANDBOXED, "PENTARUN_INSTALL__WHEELHOUSE": str(wheelhouse)}
    srv = await Server(tmp_path / "var", env=env).started()
    try:
        async with srv.client() as client:
            await setup_property(client)
            data = package_with(REQUIRES_GREETER, **{"requirements.txt": b"greeter==1.0.0\n"})
            pending = (await client.post("/api/plugins", content=data, headers=ZIP)).json()
            approval = pending["install"]["pending_approval"]
            rating = pending["install"]["security_rating"]
            assert rating["score"] == 1 and rating["reasons"][0]["rule"] == "sandbox"  # off
            assert "requirements" in [r["rule"] for r in rating["reasons"]]
            approved = await client.post(
                "/api/plugins/demo/approve", json={"digest": approval["digest"]}
            )
            assert approved.status_code == 200
            await client.post("/api/plugins/demo/enable", json={"properties": ["p1"]})
            detail = await wait_state(client, "demo", "ENABLED", "REJECTED")
            assert detail["state"] == "ENABLED", detail["reason"]
            await wait_worker(client, "demo")
            assert (await call(client)).json()["result"]["greeting"] == "hi from a wheel"
        srv = await restart(srv, env)  # importing greeter left nothing behind in site/
        async with srv.client() as client:
            await wait_worker(client, "demo")
        srv.stop()
        greeter = installed_tree(srv.data_dir) / "site" / "greeter.py"
        greeter.write_text("def greet():\n    return 'hi from someone else'\n")
        srv = await Server(srv.data_dir, env=env).started()
        async with srv.client() as client:
            detail = await wait_state(client, "demo", "QUARANTINED", within=30)
            assert "changed site/greeter.py" in detail["reason"]
            (event,) = await events_of(client, "integrity_failed")
            assert event["detail"]["changed"] == ["site/greeter.py"]
    finally:
        srv.stop()


async def test_sandboxed_an_untouched_tree_restarts_and_an_extra_file_is_caught(tmp_path):
    srv = await Server(tmp_path / "var").started()  # the sandbox on, as by default
    try:
        async with srv.client() as client:
            await setup_property(client)
            uploaded = await client.post("/api/plugins", content=package_with(WORKER), headers=ZIP)
            assert uploaded.status_code == 202, uploaded.text
            assert (await wait_state(client, "demo", "VERIFIED", "REJECTED"))["state"] == "VERIFIED"
            await client.post("/api/plugins/demo/enable", json={"properties": ["p1"]})
            await wait_worker(client, "demo")
            assert (await call(client)).status_code == 200
        srv = await restart(srv, {})  # sandboxed runs leave nothing in the tree
        async with srv.client() as client:
            await wait_worker(client, "demo")
            assert (await call(client)).status_code == 200
        srv.stop()
        pycache = installed_tree(srv.data_dir) / "worker" / "__pycache__"
        pycache.mkdir()
        (pycache / "helper.cpython-311.pyc").write_bytes(b"planted bytecode")
        srv = await Server(srv.data_dir).started()
        async with srv.client() as client:
            detail = await wait_state(client, "demo", "QUARANTINED", within=30)
            assert "extra worker/__pycache__/helper.cpython-311.pyc" in detail["reason"]
    finally:
        srv.stop()
