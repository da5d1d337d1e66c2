"""Fakes for the install service: a supervisor, ports and gates that start no worker process.

`world()` runs an `Installs` service on a fresh database with these fakes; `World` waits for
and reads what the service's background tasks change.
"""

from __future__ import annotations

import json
import time
from contextlib import asynccontextmanager

import msgspec
import trio

from pentarun.config import Config, SupervisorConfig
from pentarun.packages.gates import GATES, GateResult, Report
from pentarun.packages.pipeline import Job
from pentarun.packages.service import Installs
from pentarun.security.tokens import PluginTokens
from pentarun.store import records
from pentarun.store.db import open_database
from pentarun.supervisor.directory import Directory
from pentarun.supervisor.events import Observers, Quarantined
from pentarun.supervisor.policy import Phase

from .factory import package


class FakeActor:
    def __init__(self, spec, manifest):
        self.key, self.spec, self.manifest = spec.key, spec, manifest
        self.phase = Phase.IDLE
        self.starts = 0

    def start(self):
        self.phase = Phase.RUNNING
        self.starts += 1

    def stop(self, reason=""):
        if self.phase is not Phase.QUARANTINED:
            self.phase = Phase.STOPPED

    def quarantine(self, reason):
        self.phase = Phase.QUARANTINED

    def release(self):
        self.phase = Phase.IDLE

    def refresh_token(self, *, revoke=True):
        pass

    def deliver(self, event_type, property_id, data):
        """Lifecycle notifications (packages/lifecycle.py) land here."""
        self.delivered = [*getattr(self, "delivered", []), (event_type, property_id, data)]
        return True


class FakeSupervisor:
    def __init__(self):
        self.observers = Observers()
        self.directory = Directory()
        self.tokens = PluginTokens()
        self.sandbox = None

    async def replace(self, spec, manifest):
        current = self.directory.get(spec.key)
        if current is not None and current.spec == spec and current.manifest == manifest:
            return current
        self.directory.remove(spec.key)
        actor = FakeActor(spec, manifest)
        self.directory.add(actor)
        return actor

    async def remove(self, key, reason=""):
        self.directory.remove(key)


class FakePorts:
    def __init__(self):
        self.bound: dict[str, object] = {}
        self.opened: list[str] = []
        self.fail_close = False  # closing a listener raises (a bug in the gateway, say)

    async def open(self, key, manifest):
        self.bound[key] = manifest
        self.opened.append(key)

    async def close(self, key):
        if self.fail_close:
            raise RuntimeError("the listener would not close")
        self.bound.pop(key, None)


class FakeGates:
    """Passes everything, except the next `fail_full_suites` full-suite runs.

    Full suites wait for `hold` while it is set (to keep them running); `running` counts those
    under way and `most` the most at once; `plans` has the test plan each run was given.
    """

    def __init__(self):
        self.fail_full_suites = 0
        self.full_suites = 0
        self.hold: trio.Event | None = None
        self.running = 0
        self.most = 0
        self.plans: list[object] = []

    async def __call__(
        self, spec, manifest, plan, config, *, burst=50, progress=None, only=GATES, sandbox=None
    ):
        self.plans.append(plan)
        ok = True
        if only == GATES:
            self.full_suites += 1
            self.running += 1
            self.most = max(self.most, self.running)
            try:
                if self.hold is not None:
                    await self.hold.wait()
            finally:
                self.running -= 1
            if self.fail_full_suites:
                self.fail_full_suites -= 1
                ok = False
        gate = GateResult("security", ok, detail="" if ok else "told to fail")
        return Report(ok, [gate], time.time(), time.time())


async def _holds(predicate):
    result = predicate()
    return (await result) if hasattr(result, "__await__") else result


class World:
    def __init__(self, installs, db, supervisor, ports, gates):
        self.installs, self.db, self.supervisor = installs, db, supervisor
        self.ports, self.gates = ports, gates

    async def until(self, predicate, within=10):
        """Wait for state the service's tasks change (`predicate` may be async)."""
        with trio.fail_after(within):
            while not await _holds(predicate):
                with trio.move_on_after(0.05):  # deferred writes land without an event
                    await self.installs.driver.changed()

    def state(self, key="demo"):
        row = records.get_plugin(self.db, key)
        return row.state if row else None

    def job(self, key="demo") -> Job:
        return msgspec.convert(records.installs_of(self.db, key)[-1].job, Job)

    async def events(self, key="demo", kind=None):
        await self.db.flush()
        found = records.list_events(self.db, key, limit=500)
        return [e for e in found if kind is None or e.type == kind]

    async def audit(self, kind):
        await self.db.flush()
        rows = self.db.read("SELECT * FROM audit_log WHERE type = ? ORDER BY id", (kind,))
        return [{**dict(r), "detail": json.loads(r["detail"])} for r in rows]

    async def enabled(self, data=None, key="demo"):
        if records.get_property(self.db, "p1") is None:
            await records.create_property(self.db, "p1", "P1")
        await self.installs.upload(data or package(), "op")
        await self.installs.wait_settled(key)
        await self.installs.enable(key, ["p1"], "op")
        assert self.state(key) == "ENABLED"

    def quarantined_by_policy(self, probation=True, key="demo"):
        self.supervisor.observers(
            Quarantined(key, "crash_loop", "3 crashes within 120 s", probation=probation)
        )


def config(tmp_path, **supervisor):
    return Config(
        supervisor=SupervisorConfig(**supervisor),
        security=msgspec.structs.replace(Config().security, trust_store=str(tmp_path / "trust")),
    )


@asynccontextmanager
async def world(tmp_path, supervisor=None, **settings):
    settings.setdefault("probation_s", 0.05)
    settings.setdefault("probation_attempts", 2)
    supervisor = supervisor or FakeSupervisor()
    ports, gates = FakePorts(), FakeGates()
    async with (
        open_database(tmp_path / "pentarun.db") as database,
        trio.open_nursery() as nursery,
    ):
        installs = Installs(
            config(tmp_path, **settings), tmp_path / "var", database, supervisor, ports, gates=gates
        )
        await nursery.start(installs.run)
        yield World(installs, database, supervisor, ports, gates)
        nursery.cancel_scope.cancel()
