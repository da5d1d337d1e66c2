"""Upgrades without an outage (issue 10, item 4): the new worker starts beside the old one, takes
every new call once it passed its handshake, and the old one drains before it stops.

Server tests: a real server, the real Home Assistant plugin built into real zips (two versions
of it, see `ha_package`), real sandboxed workers, real HTTP clients on the HA port. Supervisor
tests: the hand over itself on a real supervisor with the probe plugin (no server).
"""

import json
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import msgspec
import pytest
import trio

from pentarun.packages.builder import pack, read_tree
from pentarun.packages.manifest import Manifest
from pentarun.store import records
from pentarun.supervisor.events import ActorEvent, HealthChecked
from pentarun.supervisor.handover import StartFailed
from pentarun.supervisor.policy import Phase
from pentarun.supervisor.process import WorkerSpec
from pentarun.supervisor.supervisor import Succession

from .conftest import FAST, PLUGINS, eventually, harness
from .server import Server, wait_state, wait_worker
from .test_egress import BODY, serve
from .test_homeassistant import HA_PLUGIN, LISTENER_ENV, ha_url

KEY = "homeassistant"
ZIP = {"Content-Type": "application/zip"}
CLIENTS = 4

# Both test versions of the HA plugin: `ha.info` names the version that answered and, given
# `?hold=<name>`, answers only once $HOME/<name> exists (a long call the test ends); a worker
# whose $HOME (its private /data) holds `refuse-<its version>` exits before its handshake (the
# test gates run with a scratch /data, so such a version passes them and fails only for real).
INFO = b"""@plugin.handler("ha.info")
async def info(ctx: Context, params: dict) -> dict:
    prop = await ctx.core.call("properties.get")
    return {
"""
HELD_INFO = b"""@plugin.handler("ha.info")
async def info(ctx: Context, params: dict) -> dict:
    hold = (params.get("query") or {}).get("hold")
    if hold:
        with trio.move_on_after(25):
            while not (Path.home() / hold).exists():
                await trio.sleep(0.05)
    prop = await ctx.core.call("properties.get")
    return {
        "plugin_version": DEFINITION["version"],
"""
DEFINITION_LINE = (
    b'DEFINITION = json.loads((Path(__file__).parent.parent / "definition.json").read_text())\n'
)
REFUSAL = b"""if (Path.home() / f"refuse-{DEFINITION['version']}").exists():
    raise SystemExit(3)
"""


def ha_package(version: str) -> bytes:
    files = read_tree(HA_PLUGIN)
    definition = json.loads(files["definition.json"])
    definition["version"] = version
    definition["listener"]["rate_limit"] = {"requests": 1_000_000, "window_s": 60}
    files["definition.json"] = json.dumps(definition).encode()
    worker = files["worker/plugin_worker.py"]
    assert INFO in worker and DEFINITION_LINE in worker
    worker = worker.replace(INFO, HELD_INFO).replace(DEFINITION_LINE, DEFINITION_LINE + REFUSAL)
    files["worker/plugin_worker.py"] = worker
    return pack(files, "pentavision")


@dataclass
class Site:
    server: Server
    admin: httpx.AsyncClient
    ha_url: str
    key: str

    def ha(self, timeout: float = 10) -> httpx.AsyncClient:
        headers = {"Authorization": f"Bearer {self.key}"}
        return httpx.AsyncClient(base_url=self.ha_url, headers=headers, timeout=timeout)

    def data(self, name: str) -> Path:
        """A file in the plugin's private /data (its workers' $HOME)."""
        return self.server.data_dir / "plugin-data" / KEY / name

    async def events(self, kind: str) -> list[dict]:
        found = (await self.admin.get(f"/api/plugins/{KEY}/events", params={"limit": 500})).json()
        return [e for e in found["events"] if e["type"] == kind]

    async def upgraded(self, version: str, within: float = 30) -> dict:
        with trio.fail_after(within):
            while True:
                for event in await self.events("upgraded"):
                    if event["detail"]["to"] == version:
                        return event
                await trio.sleep(0.05)

    async def worker_pid(self) -> int:
        return (await wait_worker(self.admin, KEY))["worker"]["pid"]


async def start_site(tmp_path: Path, env: dict[str, str] | None = None) -> Site:
    server = await Server(tmp_path / "var", env={**LISTENER_ENV, **(env or {})}).started()
    admin = server.client()
    await admin.post("/api/properties", json={"id": "p1", "name": "Home"})
    for camera in ("front", "back"):
        await admin.post("/api/properties/p1/cameras", json={"id": camera, "name": camera})
    uploaded = await admin.post("/api/plugins", content=ha_package("1.1.0"), headers=ZIP)
    assert uploaded.status_code == 202, uploaded.text
    await wait_state(admin, KEY, "VERIFIED")
    await admin.post(f"/api/plugins/{KEY}/enable", json={"properties": ["p1"]})
    await wait_worker(admin, KEY)
    key = (await admin.post("/api/properties/p1/ha-keys", json={"name": "ha"})).json()["key"]
    return Site(server, admin, await ha_url(server), key)


@pytest.fixture
async def site(tmp_path):
    s = await start_site(tmp_path)
    yield s
    await s.admin.aclose()
    s.server.stop()


@dataclass
class Traffic:
    """Home Assistant clients polling the camera list; every answer but a 200 is a failure."""

    site: Site
    answered: int = 0
    failures: list[str] = field(default_factory=list)

    async def client(self, stop: trio.Event) -> None:
        async with self.site.ha() as ha:
            while not stop.is_set():
                await self.get(ha, "/api/ha/v1/cameras")

    async def get(self, ha: httpx.AsyncClient, path: str) -> httpx.Response | None:
        try:
            response = await ha.get(path)
        except httpx.HTTPError as exc:
            self.failures.append(f"{path}: {exc!r}")
            return None
        if response.status_code != 200:
            self.failures.append(f"{path}: {response.status_code} {response.text[:200]}")
            return None
        self.answered += 1
        return response

    async def more(self, n: int, within: float = 20) -> None:
        target = self.answered + n
        with trio.fail_after(within):
            while self.answered < target:
                await trio.sleep(0.01)

    async def version_answering(self, version: str, within: float = 60) -> None:
        """Until `ha.info` is answered by `version` (each poll is a request that must succeed)."""
        async with self.site.ha() as ha:
            with trio.fail_after(within):
                while True:
                    response = await self.get(ha, "/api/ha/v1/info")
                    if response is not None and response.json()["plugin_version"] == version:
                        return
                    await trio.sleep(0.05)


async def test_an_upgrade_under_steady_traffic_fails_no_request(site):
    traffic = Traffic(site)
    old_pid = await site.worker_pid()
    async with trio.open_nursery() as nursery:
        stop = trio.Event()
        for _ in range(CLIENTS):
            nursery.start_soon(traffic.client, stop)
        await traffic.more(40)
        await traffic.version_answering("1.1.0")
        uploaded = await site.admin.post("/api/plugins", content=ha_package("1.2.0"), headers=ZIP)
        assert uploaded.status_code == 202, uploaded.text
        await traffic.version_answering("1.2.0")
        upgraded = await site.upgraded("1.2.0")
        await traffic.more(40)  # and the new worker goes on serving
        stop.set()
    assert traffic.failures == []
    assert traffic.answered > 100
    detail = (await site.admin.get(f"/api/plugins/{KEY}")).json()
    assert (detail["version"], detail["state"]) == ("1.2.0", "ENABLED")
    assert detail["worker"]["pid"] != old_pid
    assert upgraded["reason"] == "1.1.0 -> 1.2.0"
    drained = upgraded["detail"]["drained"]
    assert drained["calls_cut"] == 0 and drained["streams_cut"] == 0
    assert drained["timed_out"] is False
    assert await site.events("listener_closed") == []  # the HA port stayed bound throughout
    trees = list((site.server.data_dir / "plugins" / KEY).iterdir())
    assert len(trees) == 1  # the old version's tree went with its worker


async def test_a_new_version_that_cannot_start_leaves_the_old_one_serving(site):
    traffic = Traffic(site)
    old_pid = await site.worker_pid()
    site.data("refuse-1.2.0").write_text("")
    async with trio.open_nursery() as nursery:
        stop = trio.Event()
        for _ in range(CLIENTS):
            nursery.start_soon(traffic.client, stop)
        await traffic.more(40)
        uploaded = await site.admin.post("/api/plugins", content=ha_package("1.2.0"), headers=ZIP)
        assert uploaded.status_code == 202, uploaded.text
        with trio.fail_after(60):
            while True:
                detail = (await site.admin.get(f"/api/plugins/{KEY}")).json()
                upgrade = detail.get("upgrade") or detail.get("last_upgrade") or {}
                if upgrade.get("state") == "REJECTED":
                    break
                await trio.sleep(0.05)
        await traffic.more(40)
        await traffic.version_answering("1.1.0")
        stop.set()
    assert traffic.failures == []
    assert "the worker of 1.2.0 did not start" in upgrade["reason"], upgrade["reason"]
    assert "1.1.0 serves on" in upgrade["reason"]
    assert (detail["version"], detail["state"]) == ("1.1.0", "ENABLED")
    assert await site.worker_pid() == old_pid  # the old worker was never touched
    (failed,) = await site.events("handover_failed")
    assert failed["detail"]["evidence"]["last_exit"]  # what the new worker left behind
    assert await site.events("upgraded") == []
    trees = list((site.server.data_dir / "plugins" / KEY).iterdir())
    assert len(trees) == 1  # the failed version's tree is gone


async def read_stream(site: Site, frames: list[int], stop: trio.Event) -> None:
    """An MJPEG stream of the old worker, read until `stop`; `frames[0]` counts its frames."""
    async with (
        site.ha(timeout=30) as ha,
        ha.stream("GET", "/api/ha/v1/cameras/front/mjpeg", params={"fps": 10}) as response,
    ):
        assert response.status_code == 200
        async for chunk in response.aiter_raw():
            frames[0] += chunk.count(b"--frame")
            if stop.is_set():
                return


async def test_a_long_call_and_a_stream_in_flight_finish_on_the_old_worker(tmp_path):
    site = await start_site(tmp_path, {"PENTARUN_SUPERVISOR__CALL_TIMEOUT_S": "30"})
    try:
        traffic = Traffic(site)
        long_call: list[httpx.Response] = []
        frames, stop_stream = [0], trio.Event()

        async def hold() -> None:
            async with site.ha(timeout=40) as ha:
                long_call.append(await ha.get("/api/ha/v1/info", params={"hold": "release"}))

        async with trio.open_nursery() as nursery:
            nursery.start_soon(hold)
            nursery.start_soon(read_stream, site, frames, stop_stream)
            await eventually(lambda: frames[0] >= 2)
            uploaded = await site.admin.post(
                "/api/plugins", content=ha_package("1.2.0"), headers=ZIP
            )
            assert uploaded.status_code == 202, uploaded.text
            await traffic.version_answering("1.2.0")
            # the new version serves; the old worker still runs the call and the stream
            seen = frames[0]
            await eventually(lambda: frames[0] >= seen + 3)
            assert long_call == [] and await site.events("upgraded") == []
            stop_stream.set()
            site.data("release").write_text("")
        (answer,) = long_call
        assert answer.status_code == 200 and answer.json()["plugin_version"] == "1.1.0"
        drained = (await site.upgraded("1.2.0"))["detail"]["drained"]
        assert drained["calls_in_flight"] >= 1
        assert drained["calls_finished"] == drained["calls_in_flight"]
        assert (drained["streams"], drained["streams_finished"]) == (1, 1)
        assert drained["calls_cut"] == drained["streams_cut"] == 0
        assert drained["timed_out"] is False
        assert traffic.failures == []
    finally:
        await site.admin.aclose()
        site.server.stop()


# --- the hand over on a supervisor (no server) ----------------------------------------------

PROBE = msgspec.convert(json.loads((PLUGINS / "probe" / "definition.json").read_text()), Manifest)


def probe_spec(mode: str = "") -> WorkerSpec:
    return WorkerSpec("hand", PLUGINS / "probe", env={"PROBE_MODE": mode})


async def test_calls_in_flight_finish_on_the_old_worker_and_new_ones_go_to_the_new(tmp_path):
    async with harness(tmp_path) as h:
        old = await h.start("hand")
        await old.wait_for(Phase.RUNNING)
        results: list[dict] = []

        async def slow() -> None:
            reply = await old.call("sleep", "p1", {"seconds": 1.0})
            results.append(reply.value)  # type: ignore[union-attr]

        async with trio.open_nursery() as nursery:
            nursery.start_soon(slow)
            await eventually(lambda: old.load().calls == 1)
            succession = await h.supervisor.succeed(probe_spec(), PROBE)
            assert isinstance(succession, Succession)
            new = succession.successor
            assert h.supervisor.directory.get("hand") is old  # not routed before promotion
            h.supervisor.promote(succession)
            assert h.supervisor.directory.get("hand") is new
            answered = new.stats.total
            # a caller that still holds the old actor is served by the new worker
            echo = await old.call("echo", "p1", {"x": 1})
            assert echo.value == {"property": "p1", "params": {"x": 1}}  # type: ignore[union-attr]
            assert new.stats.total == answered + 1
            with trio.fail_after(10):
                report = await succession.drained()
        assert results == [{"slept": True}]
        assert (report.calls_in_flight, report.calls_finished, report.calls_cut) == (1, 1, 0)
        assert not report.timed_out
        assert old.phase is Phase.STOPPED and old.pid is None
        assert h.supervisor.directory.everyone() == [new]


async def test_a_drain_that_times_out_cuts_what_is_left(tmp_path):
    config = msgspec.structs.replace(FAST, drain_timeout_s=0.3)
    async with harness(tmp_path, config) as h:
        old = await h.start("hand")
        await old.wait_for(Phase.RUNNING)
        failed: list[Exception] = []

        async def stuck() -> None:
            try:
                await old.call("sleep", "p1", {"seconds": 30})
            except Exception as exc:
                failed.append(exc)

        async with trio.open_nursery() as nursery:
            nursery.start_soon(stuck)
            await eventually(lambda: old.load().calls == 1)
            succession = await h.supervisor.succeed(probe_spec(), PROBE)
            assert isinstance(succession, Succession)
            h.supervisor.promote(succession)
            with trio.fail_after(10):
                report = await succession.drained()
        assert report.timed_out and report.calls_cut == 1 and report.calls_finished == 0
        assert 0.3 <= report.waited_s < 2
        assert len(failed) == 1  # cut when the old worker stopped
        assert succession.successor.phase is Phase.RUNNING


async def test_a_call_waiting_for_the_old_worker_moves_to_the_new_one(tmp_path):
    async with harness(tmp_path) as h:
        old = await h.start("hand", "no_handshake")  # never ready: calls wait for it
        results: list[dict] = []

        async def waiting() -> None:
            reply = await old.call("echo", "p1", {"moved": True})
            results.append(reply.value)  # type: ignore[union-attr]

        async with trio.open_nursery() as nursery:
            nursery.start_soon(waiting)
            await eventually(lambda: old.load().calls == 1)
            succession = await h.supervisor.succeed(probe_spec(), PROBE)
            assert isinstance(succession, Succession)
            h.supervisor.promote(succession)
            with trio.fail_after(10):
                report = await succession.drained()
        assert results == [{"property": "p1", "params": {"moved": True}}]
        assert (report.calls_in_flight, report.calls_moved, report.calls_cut) == (1, 1, 0)


async def test_a_successor_that_does_not_start_changes_nothing(tmp_path):
    async with harness(tmp_path) as h:
        heard: list[ActorEvent] = []
        h.supervisor.observers.subscribe(heard.append)
        old = await h.start("hand")
        await old.wait_for(Phase.RUNNING)
        before = len(heard)
        failed = await h.supervisor.succeed(probe_spec("crash_on_start"), PROBE)
        assert isinstance(failed, StartFailed)
        assert "exited with code 3" in failed.reason and failed.evidence.last_exit
        assert h.supervisor.directory.everyone() == [old]
        # the plugin's observers never heard of it (no state change, no quarantine)
        assert [e for e in heard[before:] if not isinstance(e, HealthChecked)] == []
        echo = await old.call("echo", "p1", {})
        assert echo.value == {"property": "p1", "params": {}}  # type: ignore[union-attr]


async def test_the_new_worker_keeps_the_egress_socket_the_old_one_leaves(tmp_path):
    async with harness(tmp_path, sandboxed=True, egress=True) as h, trio.open_nursery() as nursery:
        granted = await serve(nursery)
        old = await h.start("probe")
        await records.set_egress_grants(h.db, "probe", [f"127.0.0.1:{granted}"], "operator:root")
        with trio.fail_after(10):
            await old.wait_for(Phase.RUNNING)
        spec = WorkerSpec("probe", PLUGINS / "probe", env={"PROBE_MODE": ""})
        succession = await h.supervisor.succeed(spec, PROBE)
        assert isinstance(succession, Succession)
        h.supervisor.promote(succession)
        with trio.fail_after(10):
            await succession.drained()
        assert old.phase is Phase.STOPPED  # gone, and the socket both used is still served
        fetched = await succession.successor.call(
            "fetch", "p1", {"url": f"http://127.0.0.1:{granted}/"}
        )
        assert (fetched.value["status"], fetched.value["length"]) == (200, len(BODY))  # type: ignore[union-attr]
        await h.supervisor.remove("probe")  # the last actor gone: the socket goes with it
        assert not h.egress.socket_path("probe").exists()  # type: ignore[union-attr]
        nursery.cancel_scope.cancel()
