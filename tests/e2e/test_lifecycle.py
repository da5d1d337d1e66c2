"""Lifecycle notifications reach a real sandboxed worker, and every one is on the timeline."""

import json

import trio

from pentarun.packages.builder import pack

from ..packages.factory import definition, source
from .server import Server, wait_state, wait_worker

ZIP = {"Content-Type": "application/zip"}
WORKER = b"""from pentarun.sdk import Context, Plugin

plugin = Plugin()
SEEN = []


def note(name):
    @plugin.on_lifecycle(name)
    async def noted(ctx: Context, event: dict) -> None:
        SEEN.append({**event, "ctx_property": ctx.property})


for name in ("approved", "activated", "deactivated", "reloaded", "revoked"):
    note(name)


@plugin.handler("life.seen")
async def seen(ctx: Context, params: dict) -> dict:
    return {"seen": SEEN}


if __name__ == "__main__":
    plugin.run()
"""


def package() -> bytes:
    d = definition(
        key="life", name="Life", scopes=["properties:read", "events:publish"],
        handlers=["life.seen"],
    )  # fmt: skip
    files = source(d)
    files["worker/plugin_worker.py"] = WORKER
    case = {"name": "seen", "category": "integration", "handler": "life.seen", "params": {}}
    files["tests/test_plan.json"] = json.dumps(
        {"cases": [{**case, "expect": {"ok": True}}]}
    ).encode()
    return pack(files, publisher="tests")


async def seen_by_worker(client, *, at_least: int) -> list[dict]:
    with trio.fail_after(10):
        while True:
            answer = await client.post(
                "/api/plugins/life/call", json={"handler": "life.seen", "property": "p1"}
            )
            seen = answer.json()["result"]["seen"]
            if len(seen) >= at_least:
                return seen
            await trio.sleep(0.05)


async def test_the_core_tells_a_plugin_what_happens_to_it(tmp_path):
    server = await Server(tmp_path / "var").started()
    try:
        async with server.client() as client:
            for pid in ("p1", "p2"):
                await client.post("/api/properties", json={"id": pid, "name": pid})
            uploaded = await client.post("/api/plugins", content=package(), headers=ZIP)
            digest = uploaded.json()["install"]["pending_approval"]["digest"]
            await client.post("/api/plugins/life/approve", json={"digest": digest})
            await wait_state(client, "life", "VERIFIED")
            await client.post("/api/plugins/life/enable", json={"properties": ["p1"]})
            await wait_worker(client, "life")

            # kept for its first start: the approval (of this version) and the activation;
            # the worker runs each notification in its own task, so their order is not fixed
            first = {e["event"]: e for e in await seen_by_worker(client, at_least=2)}
            assert first["approved"]["detail"]["version"] == "1.0.0"
            assert first["activated"] == {
                "event": "activated", "property": "p1", "detail": {}, "ctx_property": "p1"
            }  # fmt: skip
            await client.put("/api/plugins/life/properties/p2")
            activated = await seen_by_worker(client, at_least=3)
            assert (activated[2]["event"], activated[2]["property"]) == ("activated", "p2")
            await client.delete("/api/plugins/life/properties/p2")
            deactivated = await seen_by_worker(client, at_least=4)
            assert (deactivated[3]["event"], deactivated[3]["property"]) == ("deactivated", "p2")

            await client.post("/api/plugins/life/quarantine", json={"reason": "a test"})
            await wait_state(client, "life", "QUARANTINED")
            events = (await client.get("/api/plugins/life/events")).json()["events"]
            types = [e["type"] for e in events]
            for name in ("approved", "activated", "deactivated", "revoked"):
                assert f"lifecycle_{name}" in types
            revoked = next(e for e in events if e["type"] == "lifecycle_revoked")
            assert revoked["detail"]["reason"] == "quarantined: a test"
    finally:
        server.stop()
