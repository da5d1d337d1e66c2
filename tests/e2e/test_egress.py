"""The egress lane with a real worker: plain `urllib.request.urlopen` in the plugin, the SDK's
relay (started when the worker imports the SDK, proxy variables on a free port), the plugin's
Unix socket, the core's proxy, a local HTTP server on 127.0.0.1.

Unsandboxed here (the worker shares the host's network): that a direct socket is blocked is
the sandbox's part — its network namespace has only its own loopback (tests/e2e/test_sandbox.py
and the escape corpus). What this shows is that the lane is a way out that works unchanged
for ordinary code and lets out only what the policy allows.
"""

import json
from functools import partial

import msgspec
import trio

from pentarun.config import EgressConfig
from pentarun.lanes.egress import EgressLane, egress_detail
from pentarun.packages.manifest import Manifest
from pentarun.store import records
from pentarun.supervisor.policy import Phase

from .conftest import PLUGINS, harness

BODY = b"hello from the LAN camera"


async def camera(stream: trio.SocketStream) -> None:
    """A tiny HTTP server: answers any request with BODY."""
    with trio.move_on_after(10):
        request = b""
        while b"\r\n\r\n" not in request:
            chunk = await stream.receive_some(65536)
            if not chunk:
                return
            request += chunk
        head = f"HTTP/1.1 200 OK\r\nContent-Length: {len(BODY)}\r\nConnection: close\r\n\r\n"
        await stream.send_all(head.encode() + BODY)


async def serve(nursery: trio.Nursery) -> int:
    listeners = await nursery.start(partial(trio.serve_tcp, camera, 0, host="127.0.0.1"))
    return listeners[0].socket.getsockname()[1]


async def rebinding_resolver(host: str, port: int) -> list[str]:
    """`example.com` (the probe's allowed domain) resolving to loopback: DNS rebinding."""
    return ["127.0.0.1"] if host == "example.com" else []


async def test_urllib_reaches_a_granted_host_and_nothing_else(tmp_path):
    async with harness(tmp_path) as h, trio.open_nursery() as nursery:
        granted, ungranted = await serve(nursery), await serve(nursery)
        lane = EgressLane(h.db, EgressConfig(), tmp_path, resolver=rebinding_resolver)
        await nursery.start(lane.run)
        definition = json.loads((PLUGINS / "probe" / "definition.json").read_text())
        await lane.open("probe", msgspec.convert(definition, Manifest))  # before the worker
        actor = await h.start("probe", env=lane.egress_environment("probe", sandboxed=False))
        await records.set_egress_grants(h.db, "probe", [f"127.0.0.1:{granted}"], "operator:root")
        with trio.fail_after(10):
            await actor.wait_for(Phase.RUNNING)

        async def fetch(url: str) -> dict:
            return (await actor.call("fetch", "p1", {"url": url})).value

        ok = await fetch(f"http://127.0.0.1:{granted}/snapshot.jpg")
        assert (ok["status"], ok["length"]) == (200, len(BODY))
        assert ok["proxy"].startswith("http://127.0.0.1:")  # set by the SDK's relay

        refused = await fetch(f"http://127.0.0.1:{ungranted}/snapshot.jpg")  # not this port
        assert refused["status"] == 403 and "port_not_allowed" in refused["body"]
        loopback = await fetch(f"http://127.0.0.2:{ungranted}/")  # loopback, no grant at all
        assert loopback["status"] == 403 and "host_not_allowed" in loopback["body"]
        rebound = await fetch("http://example.com/")  # allowed, but resolves to loopback
        assert rebound["status"] == 403 and "address_loopback" in rebound["body"]
        tunnel = await fetch(f"https://127.0.0.1:{ungranted}/")  # CONNECT, refused
        assert tunnel["status"] == 0 and "403" in tunnel["error"]

        await h.db.flush()
        (allowed,) = records.list_audit(h.db, type_="egress.request", plugin="probe")
        assert allowed.detail["status"] == 200 and allowed.detail["port"] == granted
        assert allowed.detail["bytes_received"] == len(BODY)
        rows = records.list_audit(h.db, type_="egress.refused", plugin="probe")
        assert sorted(r.detail["reason"] for r in rows) == [
            "address_loopback",
            "host_not_allowed",
            "port_not_allowed",
            "port_not_allowed",
        ]
        assert {r.detail["port"] for r in rows} == {ungranted, 80}
        assert all(r.risk_score >= 30 and r.actor == "plugin:probe" for r in rows)
        assert egress_detail(h.db, "probe")["refusals"] == 4
        nursery.cancel_scope.cancel()


async def test_in_the_sandbox_the_lane_is_the_only_way_out(tmp_path):
    async with harness(tmp_path, sandboxed=True, egress=True) as h, trio.open_nursery() as nursery:
        granted = await serve(nursery)
        actor = await h.start("probe")  # the supervisor opens its socket and mounts it
        await records.set_egress_grants(h.db, "probe", [f"127.0.0.1:{granted}"], "operator:root")
        with trio.fail_after(10):
            await actor.wait_for(Phase.RUNNING)
        ok = (await actor.call("fetch", "p1", {"url": f"http://127.0.0.1:{granted}/"})).value
        assert (ok["status"], ok["length"]) == (200, len(BODY))  # through the lane
        assert ok["proxy"] == "http://127.0.0.1:3128"  # set at spawn, inside its own network
        direct = (
            await actor.call("fetch", "p1", {"url": f"http://127.0.0.1:{granted}/", "direct": True})
        ).value
        # no route out: the host's port is not in the sandbox's network, and Landlock (where
        # the kernel has it) refuses TCP to any port but the relay's before the stack answers
        landlock = h.sandbox is not None and h.sandbox.landlock > 0
        expected = "permission denied" if landlock else "refused"
        assert direct["status"] == 0 and expected in direct["error"].lower()
        nursery.cancel_scope.cancel()
