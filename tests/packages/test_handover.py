"""Upgrades of a running plugin hand over (the driver's side), with a fake supervisor.

What the driver decides: when an upgrade hands over instead of stopping the old worker; that a
new worker that does not start fails the upgrade with nothing half-applied; that the old tree
goes and `upgraded` is recorded only once the old worker drained.
"""

import trio

from pentarun.store import records
from pentarun.supervisor.directory import Role
from pentarun.supervisor.events import Evidence
from pentarun.supervisor.handover import DrainReport, StartFailed
from pentarun.supervisor.policy import Phase
from pentarun.supervisor.supervisor import Succession

from .factory import definition, package
from .fakes import FakeActor, FakeSupervisor, world

REPORT = DrainReport(calls_in_flight=2, calls_finished=2, waited_s=0.5)


class Actor(FakeActor):
    def __init__(self, spec, manifest):
        super().__init__(spec, manifest)
        self.delivered: list[str] = []

    def deliver(self, event_type, property_id, data):
        self.delivered.append(event_type)
        return self.phase is Phase.RUNNING


class HandingOver(FakeSupervisor):
    """A fake supervisor that hands over: successors start (or fail to, when `refuse` is set),
    and a promoted one's predecessor drains until `drain` is set."""

    def __init__(self) -> None:
        super().__init__()
        self.refuse: StartFailed | None = None
        self.drain = trio.Event()
        self.succeeded: list[FakeActor] = []
        self.replaced = 0
        self._nursery: trio.Nursery | None = None

    async def replace(self, spec, manifest):
        self.replaced += 1
        current = self.directory.get(spec.key)
        if current is not None and current.spec == spec and current.manifest == manifest:
            return current
        self.directory.remove(spec.key)
        actor = Actor(spec, manifest)
        self.directory.add(actor)
        return actor

    async def succeed(self, spec, manifest):
        if self.refuse is not None:
            return self.refuse
        actor = Actor(spec, manifest)
        actor.start()
        self.directory.add_successor(actor)
        self.succeeded.append(actor)
        return Succession(actor, self.directory.get(spec.key))

    def promote(self, succession, reason=""):
        previous = self.directory.promote(succession.successor)
        assert self._nursery is not None
        self._nursery.start_soon(self._drain, previous, succession)

    async def _drain(self, previous, succession):
        await self.drain.wait()
        previous.stop()
        self.directory.drop(previous)
        succession._finish(REPORT)

    async def abandon(self, succession, reason):
        self.directory.drop(succession.successor)


def trees(w, key="demo"):
    return sorted(p.name for p in (w.installs.layout.data_dir / "plugins" / key).iterdir())


async def test_an_upgrade_of_a_running_plugin_hands_over_and_records_the_drain(tmp_path):
    supervisor = HandingOver()
    async with world(tmp_path, supervisor) as w, trio.open_nursery() as nursery:
        supervisor._nursery = nursery
        await w.enabled()
        old = w.supervisor.directory.get("demo")
        old_install = records.installs_of(w.db, "demo")[0].id
        replaced = supervisor.replaced
        await w.installs.upload(package(definition(version="1.1.0")), "op")
        await w.until(lambda: records.get_plugin(w.db, "demo").version == "1.1.0")
        new = w.supervisor.directory.get("demo")
        assert new is supervisor.succeeded[0] and new.manifest.version == "1.1.0"
        assert w.state() == "ENABLED" and new.phase is Phase.RUNNING
        assert supervisor.replaced == replaced  # no second start: the hand over started it
        assert w.supervisor.directory.role(old) is Role.DRAINING
        assert w.ports.opened.count("demo") == 1  # the listener stayed bound
        assert old_install in trees(w)  # its tree stays while it drains
        assert await w.events(kind="upgraded") == []
        supervisor.drain.set()
        await w.until(lambda: old_install not in trees(w))
        (upgraded,) = await w.events(kind="upgraded")
        assert upgraded.reason == "1.0.0 -> 1.1.0" and upgraded.state == "ENABLED"
        assert upgraded.detail["drained"] == {
            "calls_in_flight": 2,
            "calls_finished": 2,
            "calls_moved": 0,
            "calls_cut": 0,
            "streams": 0,
            "streams_finished": 0,
            "streams_cut": 0,
            "waited_s": 0.5,
            "timed_out": False,
        }
        assert w.supervisor.directory.everyone() == [new]
        nursery.cancel_scope.cancel()


async def test_a_new_worker_that_does_not_start_fails_the_upgrade_and_changes_nothing(tmp_path):
    supervisor = HandingOver()
    supervisor.refuse = StartFailed(
        "BACKOFF: crashed: exited with code 3", Evidence(last_exit="exited with code 3")
    )
    async with world(tmp_path, supervisor) as w:
        await w.enabled()
        old = w.supervisor.directory.get("demo")
        before = trees(w)
        await w.installs.upload(package(definition(version="1.1.0")), "op")
        await w.installs.wait_settled("demo")
        latest = records.installs_of(w.db, "demo")[-1]
        assert w.job().stage.value == "REJECTED"
        assert w.job().reason == (
            "the worker of 1.1.0 did not start: BACKOFF: crashed: exited with code 3; "
            "1.0.0 serves on"
        )
        plugin = records.get_plugin(w.db, "demo")
        assert (plugin.version, plugin.state) == ("1.0.0", "ENABLED")
        assert not latest.active and w.supervisor.directory.get("demo") is old
        assert old.phase is Phase.RUNNING and trees(w) == before  # the new tree is gone
        (failed,) = await w.events(kind="handover_failed")
        assert failed.detail["evidence"]["last_exit"] == "exited with code 3"
        assert failed.detail["from"] == "1.0.0" and failed.detail["to"] == "1.1.0"
        states = [e.state for e in await w.events(kind="install_state")]
        assert "ENABLED" not in states[: states.index("REJECTED")]  # never shown as enabled


async def test_an_upgrade_of_a_disabled_plugin_needs_no_hand_over(tmp_path):
    supervisor = HandingOver()
    async with world(tmp_path, supervisor) as w:
        await w.enabled()
        await w.installs.disable("demo", [], "op")
        await w.installs.upload(package(definition(version="1.1.0")), "op")
        await w.installs.wait_settled("demo")
        assert records.get_plugin(w.db, "demo").version == "1.1.0"
        assert w.state() == "VERIFIED" and supervisor.succeeded == []
        assert len(trees(w)) == 1
        (upgraded,) = await w.events(kind="upgraded")
        assert upgraded.reason == "1.0.0 -> 1.1.0"


async def test_a_stop_during_the_drain_leaves_no_old_tree_after_the_restart(tmp_path):
    supervisor = HandingOver()  # its drains never end here: the server stops during one
    async with world(tmp_path, supervisor) as w, trio.open_nursery() as nursery:
        supervisor._nursery = nursery
        await w.enabled()
        old_install = records.installs_of(w.db, "demo")[0].id
        await w.installs.upload(package(definition(version="1.1.0")), "op")
        await w.until(lambda: records.get_plugin(w.db, "demo").version == "1.1.0")
        assert len(trees(w)) == 2
        nursery.cancel_scope.cancel()
    async with world(tmp_path, HandingOver()) as w:
        new_install = records.installs_of(w.db, "demo")[-1].id
        assert trees(w) == [new_install] and old_install != new_install
        assert w.state() == "ENABLED"
        assert w.supervisor.directory.get("demo").manifest.version == "1.1.0"


class SlowHandOver(HandingOver):
    """The new worker takes its time to start: the plugin's lock is held meanwhile."""

    def __init__(self) -> None:
        super().__init__()
        self.starting = trio.Event()
        self.go = trio.Event()

    async def succeed(self, spec, manifest):
        self.starting.set()
        await self.go.wait()
        return await super().succeed(spec, manifest)


async def test_a_quarantine_that_waited_for_a_hand_over_quarantines_what_took_over(tmp_path):
    supervisor = SlowHandOver()
    async with world(tmp_path, supervisor) as w, trio.open_nursery() as nursery:
        supervisor._nursery = nursery
        await w.enabled()
        await w.installs.upload(package(definition(version="1.1.0")), "op")
        await supervisor.starting.wait()  # the upgrade holds the plugin's lock
        nursery.start_soon(w.installs.quarantine, "demo", "operator says so", "op")
        await trio.sleep(0.05)  # the quarantine is waiting for the lock
        supervisor.go.set()
        supervisor.drain.set()
        await w.until(lambda: records.get_plugin(w.db, "demo").state == "QUARANTINED")
        row = records.get_plugin(w.db, "demo")
        assert row.version == "1.1.0"  # the install that took over is the one quarantined
        assert w.supervisor.directory.get("demo").phase is Phase.QUARANTINED
        nursery.cancel_scope.cancel()
