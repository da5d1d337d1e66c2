"""`ctx.storage` from real sandboxed workers: files kept by the core per plugin and property,
through a restart of the worker, within the plugin's quota (issue 11, item 5)."""

import json
import os
import signal

import trio

from pentarun.config import StorageConfig
from pentarun.packages.builder import pack
from pentarun.supervisor.policy import Phase

from ..packages.factory import WORKER, definition, source
from .conftest import PLUGINS, harness
from .server import Server, wait_state, wait_worker

PROBE = json.loads((PLUGINS / "probe" / "definition.json").read_text())
KEEPER = {
    "scopes": [*PROBE["scopes"], "storage:read", "storage:write"],
    "handlers": [*PROBE["handlers"], "storage"],
}
NO_STORAGE = {"handlers": [*PROBE["handlers"], "storage"]}
KIB = 1024


async def running(*actors):
    with trio.fail_after(15):
        for actor in actors:
            await actor.wait_for(Phase.RUNNING)


async def storage(actor, op, prop="p1", **params):
    return (await actor.call("storage", prop, {"op": op, **params})).value


async def test_a_sandboxed_worker_keeps_files_through_the_core(tmp_path):
    async with harness(tmp_path, sandboxed=True, storage=StorageConfig(quota_mb=1)) as h:
        keeper = await h.start("keeper", properties=("p1", "p2"), manifest=KEEPER)
        await running(keeper)

        assert await storage(keeper, "put", name="notes/a.txt", size=300 * KIB) == {
            "put": 300 * KIB
        }
        await storage(keeper, "put", name="b", fill="hello", size=1)
        await storage(keeper, "put", name="notes/a.txt", fill="p2", size=1, prop="p2")
        assert await storage(keeper, "list") == {"names": ["b", "notes/a.txt"]}
        assert await storage(keeper, "get", name="b") == {"data": "hello"}
        assert await storage(keeper, "get", name="notes/a.txt", prop="p2") == {"data": "p2"}
        assert await storage(keeper, "get", name="missing") == {"data": None}
        on_disk = tmp_path / "storage" / "keeper" / "p1" / "notes~a.txt"
        assert on_disk.stat().st_size == 300 * KIB

        # past the quota (1 MiB for the plugin, both properties): refused, nothing written
        await storage(keeper, "put", name="c", size=600 * KIB, prop="p2")
        full = await storage(keeper, "put", name="d", size=200 * KIB)
        assert (full["error"], full["status"]) == ("storage_full", 409)
        used = 300 * KIB + 5 + 2 + 600 * KIB
        assert (full["details"]["used"], full["details"]["limit"]) == (used, 1024 * KIB)
        assert await storage(keeper, "get", name="d") == {"data": None}
        assert not [p for p in on_disk.parent.iterdir() if p.name.startswith(".tmp")]

        # a name that would leave its directory never reaches the disk
        bad = await storage(keeper, "put", name="../../escape", size=1)
        assert (bad["error"], bad["status"]) == ("bad_request", 400)
        assert not (tmp_path / "escape").exists()

        # the files outlive the worker
        os.kill(keeper.pid, signal.SIGKILL)
        with trio.fail_after(15):
            await keeper.wait_for(Phase.BACKOFF, Phase.STARTING)
        await running(keeper)
        assert keeper.state.restarts == 1
        assert await storage(keeper, "get", name="b") == {"data": "hello"}
        assert await storage(keeper, "delete", name="c", prop="p2") == {"deleted": True}
        assert await storage(keeper, "put", name="d", size=200 * KIB) == {"put": 200 * KIB}


async def test_storage_needs_its_scopes_and_stays_with_its_plugin(tmp_path):
    async with harness(tmp_path, sandboxed=True) as h:
        keeper = await h.start("keeper", manifest=KEEPER)
        other = await h.start("other", manifest=NO_STORAGE)
        await running(keeper, other)
        await storage(keeper, "put", name="secret", fill="s", size=3)
        refused = await storage(other, "get", name="secret")
        assert (refused["error"], refused["status"]) == ("scope_denied", 403)
        refused = await storage(other, "put", name="secret", size=1)
        assert (refused["error"], refused["status"]) == ("scope_denied", 403)
        # the same name in another plugin's storage is another file
        sibling = await h.start("sibling", manifest=KEEPER)
        await running(sibling)
        assert await storage(sibling, "get", name="secret") == {"data": None}
        assert await storage(keeper, "get", name="secret") == {"data": "sss"}


KEEPING_WORKER = WORKER.replace(
    b'    return {"property": ctx.property, "params": params}',
    b'    await ctx.storage.put("calls/last", repr(params).encode())\n'
    b'    return {"kept": (await ctx.storage.get("calls/last")).decode(),'
    b' "names": await ctx.storage.list()}',
)


async def test_an_installed_plugin_keeps_files_and_loses_them_with_its_uninstall(tmp_path):
    """Through the whole server: the test gates give the plugin storage too, the operator
    approves storage:write, the files live under the data dir and go with an uninstall."""
    files = source(
        definition(scopes=["properties:read", "storage:read", "storage:write"]),
    )
    files["worker/plugin_worker.py"] = KEEPING_WORKER
    server = await Server(tmp_path / "var").started()
    try:
        async with server.client() as client:
            await client.post("/api/properties", json={"id": "p1", "name": "p1"})
            headers = {"Content-Type": "application/zip"}
            uploaded = await client.post("/api/plugins", content=pack(files), headers=headers)
            pending = uploaded.json()["install"]["pending_approval"]
            assert "storage:write" in [s["scope"] for s in pending["scopes"]]
            await client.post("/api/plugins/demo/approve", json={"digest": pending["digest"]})
            assert (await wait_state(client, "demo", "VERIFIED"))["state"] == "VERIFIED"
            await client.post("/api/plugins/demo/enable", json={"properties": ["p1"]})
            await wait_worker(client, "demo")
            answer = await client.post(
                "/api/plugins/demo/call",
                json={"handler": "demo.echo", "property": "p1", "params": {"a": 1}},
            )
            assert answer.json()["result"] == {"kept": "{'a': 1}", "names": ["calls/last"]}
            kept = server.data_dir / "storage" / "demo" / "p1" / "calls~last"
            assert kept.read_bytes() == b"{'a': 1}"
            deleted = await client.delete("/api/plugins/demo")
            assert deleted.json() == {"plugin": "demo", "uninstalled": True}
            assert not (server.data_dir / "storage" / "demo").exists()
    finally:
        server.stop()
