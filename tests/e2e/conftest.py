"""Real worker processes, a real SQLite file."""

import json
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path

import msgspec
import trio

from pentarun.assembly import Platform, assemble
from pentarun.config import EgressConfig, SecurityConfig, StorageConfig, SupervisorConfig
from pentarun.lanes.egress import EgressLane
from pentarun.lanes.storage import StorageLane
from pentarun.packages.manifest import Manifest
from pentarun.sandbox.launcher import Sandbox
from pentarun.store import records
from pentarun.store.db import Database, open_database
from pentarun.supervisor.actor import WorkerActor
from pentarun.supervisor.process import WorkerSpec

PLUGINS = Path(__file__).parent / "plugins"

FAST = SupervisorConfig(
    backoff_initial_s=0.05,
    backoff_max_s=0.2,
    crash_window_s=30,
    health_interval_s=0.1,
    health_timeout_s=0.1,
    startup_timeout_s=10,
    stop_timeout_s=1,
    call_timeout_s=5,
)


class Harness:
    def __init__(self, platform: Platform, db: Database) -> None:
        self.platform = platform
        self.supervisor = platform.supervisor
        self.db = db
        self.egress: EgressLane | None = None
        self.sandbox: Sandbox | None = None

    async def start(
        self,
        key: str,
        mode: str = "",
        *,
        properties: tuple[str, ...] = ("p1",),
        plugin: str = "probe",
        memory_limit_mb: int | None = None,
        manifest: dict | None = None,
        env: dict[str, str] | None = None,
    ) -> WorkerActor:
        """`env`: more environment for the worker (e.g. the egress lane's variables)."""
        definition = json.loads((PLUGINS / plugin / "definition.json").read_text())
        definition.update(manifest or {})
        await records.upsert_plugin(
            self.db, key, name=key, version="1.0.0", state="ENABLED", manifest=definition
        )
        for prop in properties:
            if records.get_property(self.db, prop) is None:
                await records.create_property(self.db, prop, prop)
            await records.assign_property(self.db, key, prop)
        spec = WorkerSpec(
            key,
            PLUGINS / plugin,
            env={"PROBE_MODE": mode, **(env or {})},
            memory_limit_mb=memory_limit_mb,
        )
        actor = await self.supervisor.add(spec, msgspec.convert(definition, Manifest))
        actor.start()
        return actor


@asynccontextmanager
async def harness(
    tmp_path: Path,
    config: SupervisorConfig = FAST,
    *,
    sandboxed: bool = False,
    egress: bool = False,
    security: SecurityConfig | None = None,
    storage: StorageConfig | None = None,
) -> AsyncIterator[Harness]:
    """A supervisor on a fresh store; `sandboxed` starts its workers in the real sandbox,
    `egress` gives plugins with proxy:egress their proxy lane (`h.egress`)."""
    security = security or SecurityConfig()
    sandbox = Sandbox(security, tmp_path) if sandboxed else None
    if sandbox is not None:
        assert (await trio.to_thread.run_sync(sandbox.check)).ok, sandbox.status.reason
    async with open_database(tmp_path / "pentarun.db") as db, trio.open_nursery() as nursery:
        lane = None
        if egress:
            lane = EgressLane(
                db,
                EgressConfig(),
                tmp_path,
                socket_owner=sandbox.uid_of if sandbox else lambda key: None,
            )
            await nursery.start(lane.run)
        # plugins keep files (`ctx.storage`) under tmp_path/storage, with `storage`'s quotas
        files = StorageLane(tmp_path / "storage", storage or StorageConfig())
        platform = assemble(config, db, sandbox=sandbox, egress=lane, storage=files)
        supervisor = platform.supervisor
        await nursery.start(supervisor.run)
        try:
            harness = Harness(platform, db)
            harness.egress, harness.sandbox = lane, sandbox
            yield harness
        finally:
            with trio.CancelScope(shield=True):
                await supervisor.stop_all(5)
            nursery.cancel_scope.cancel()


Waiter = Callable[[], bool]


async def eventually(predicate: Waiter, within_s: float = 10.0) -> None:
    """Poll state that other tasks own (worker processes, logs) until it holds."""
    with trio.fail_after(within_s):
        while not predicate():
            await trio.sleep(0.02)
