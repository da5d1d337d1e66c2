"""A dependent and its dependency over real HTTP: resolved at install, enabled in order, called
through the core, guarded at uninstall, DEGRADED and recovered with the dependency (issue 10)."""

import json

import trio

from pentarun.packages.builder import pack

from ..packages.factory import definition, source
from .server import Server, wait_state, wait_worker

ZIP = {"Content-Type": "application/zip"}

NVR_WORKER = b"""from pentarun.sdk import Context, Plugin

plugin = Plugin()


@plugin.handler("nvr.clips")
async def clips(ctx: Context, params: dict) -> dict:
    return {"property": ctx.property, "clips": ["c1", "c2"], "asked": params}


if __name__ == "__main__":
    plugin.run()
"""

CAM_WORKER = b"""from pentarun.sdk import Context, Error, Plugin

plugin = Plugin()


@plugin.handler("cam.ping")
async def ping(ctx: Context, params: dict) -> dict:
    return {"pong": True}


@plugin.handler("cam.clips")
async def clips(ctx: Context, params: dict) -> dict:
    try:
        return {"from_nvr": await ctx.plugins.call("nvr", "nvr.clips", camera="front")}
    except Error as exc:
        return {"error": exc.code}


if __name__ == "__main__":
    plugin.run()
"""


def plan(handler: str) -> bytes:
    case = {"name": "answers", "category": "integration", "handler": handler, "params": {}}
    return json.dumps({"cases": [{**case, "expect": {"ok": True}}]}).encode()


def nvr(version: str = "1.0.0") -> bytes:
    d = definition(key="nvr", name="NVR", version=version, handlers=["nvr.clips"])
    files = source(d)
    files["worker/plugin_worker.py"] = NVR_WORKER
    files["tests/test_plan.json"] = plan("nvr.clips")
    return pack(files, publisher="tests")


def cam(nvr_range: str = ">=1.0,<2") -> bytes:
    d = definition(
        key="cam",
        name="Cam",
        scopes=["properties:read", "plugins:call"],
        handlers=["cam.ping", "cam.clips"],
        dependencies={"nvr": nvr_range},
    )
    files = source(d)
    files["worker/plugin_worker.py"] = CAM_WORKER
    # the gates run the plugin alone: its test plan does not reach its dependency
    files["tests/test_plan.json"] = plan("cam.ping")
    return pack(files, publisher="tests")


async def upload(client, data: bytes):
    return await client.post("/api/plugins", content=data, headers=ZIP)


async def events(client, key: str) -> list[dict]:
    return (await client.get(f"/api/plugins/{key}/events")).json()["events"]


async def test_a_dependent_and_its_dependency_from_install_to_uninstall(tmp_path):
    server = await Server(tmp_path / "var").started()
    try:
        async with server.client() as client:
            for pid in ("p1", "p2"):
                await client.post("/api/properties", json={"id": pid, "name": pid})

            missing = await upload(client, cam())  # refused by name, nothing stored
            assert missing.status_code == 422
            (problem,) = missing.json()["error"]["details"]["problems"]
            assert problem["code"] == "manifest.dependency_missing"
            assert problem["path"] == "definition.json:dependencies.nvr"

            assert (await upload(client, nvr("1.0.0"))).status_code == 202
            await wait_state(client, "nvr", "VERIFIED")
            wrong = await upload(client, cam(">=2"))
            assert wrong.json()["error"]["details"]["problems"][0]["code"] == (
                "manifest.dependency_version"
            )

            uploaded = (await upload(client, cam())).json()  # plugins:call needs approval
            digest = uploaded["install"]["pending_approval"]["digest"]
            await client.post("/api/plugins/cam/approve", json={"digest": digest})
            await wait_state(client, "cam", "VERIFIED")

            first = await client.post("/api/plugins/cam/enable", json={"properties": ["p1"]})
            assert first.status_code == 409 and first.json()["error"]["code"] == (
                "dependency_not_enabled"
            )
            assert "enable nvr for p1 first" in first.json()["error"]["message"]
            enabled = await client.post("/api/plugins/nvr/enable", json={"properties": ["p1"]})
            assert enabled.status_code == 200, enabled.text
            await wait_state(client, "nvr", "ENABLED", within=20)
            ok = await client.post("/api/plugins/cam/enable", json={"properties": ["p1"]})
            assert ok.status_code == 200, ok.text
            await wait_worker(client, "cam")
            await wait_worker(client, "nvr")
            other = await client.put("/api/plugins/cam/properties/p2")
            assert other.json()["error"]["code"] == "dependency_not_enabled"

            answer = await client.post(
                "/api/plugins/cam/call", json={"handler": "cam.clips", "property": "p1"}
            )
            assert answer.json()["result"]["from_nvr"] == {
                "property": "p1",
                "clips": ["c1", "c2"],
                "asked": {"camera": "front"},
            }
            detail = (await client.get("/api/plugins/cam")).json()
            assert detail["degraded"] is None and detail["worker"]["calls_out"] == 1
            assert detail["dependencies"][0]["ok"] and detail["dependencies"][0]["plugin"] == "nvr"

            guarded = await client.delete("/api/plugins/nvr")
            assert guarded.status_code == 409 and guarded.json()["error"]["code"] == (
                "has_dependents"
            )
            assert guarded.json()["error"]["details"]["dependents"] == ["cam"]

            await client.post("/api/plugins/nvr/quarantine", json={"reason": "a test"})
            await wait_state(client, "nvr", "QUARANTINED")
            cam_now = (await client.get("/api/plugins/cam")).json()
            assert "nvr is QUARANTINED" in cam_now["degraded"]
            refused = await client.post(
                "/api/plugins/cam/call", json={"handler": "cam.clips", "property": "p1"}
            )
            assert refused.json()["result"] == {"error": "plugin_quarantined"}
            with trio.fail_after(10):
                while "dependency_degraded" not in [e["type"] for e in await events(client, "cam")]:
                    await trio.sleep(0.05)

            await client.post("/api/plugins/nvr/release")  # re-tested, then enabled again
            await wait_state(client, "nvr", "VERIFIED", within=30)
            await client.post("/api/plugins/nvr/enable", json={"properties": ["p1"]})
            await wait_state(client, "nvr", "ENABLED", within=20)
            with trio.fail_after(20):
                while "dependency_recovered" not in [
                    e["type"] for e in await events(client, "cam")
                ]:
                    await trio.sleep(0.05)
            assert (await client.get("/api/plugins/cam")).json()["degraded"] is None

            forced = await client.delete("/api/plugins/nvr", params={"force": "true"})
            assert forced.status_code == 200
            cam_after = await wait_state(client, "cam", "DISABLED")
            assert "its dependency nvr was uninstalled" in cam_after["reason"]
            assert "nvr is not installed" in cam_after["degraded"]
    finally:
        server.stop()
