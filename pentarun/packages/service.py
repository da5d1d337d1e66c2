"""The install service: carries out the pipeline's commands (the I/O shell of pipeline.step).

Every change to an install job goes through `_drive(install_id, event)` under the plugin's
lock: load the job, `step()`, store the new job, then carry out the commands. Long steps
(install, test, promote, verify) run as background tasks that end by driving StepDone or
StepFailed. At start, `recover()` feeds every unfinished job `Resume`, so a server killed at
any point comes back consistent (see pipeline.py).
"""

from __future__ import annotations

import hashlib
import logging
import uuid
from collections import defaultdict
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import msgspec
import trio

from .. import __version__
from ..config import Config
from ..errors import Conflict, NotFound, Unprocessable
from ..security import signing
from ..security.scopes import SCOPES, Level, needs_approval, risk_score
from ..security.trust import load_trust_store
from ..store import records
from ..store.db import Database
from ..supervisor.policy import Phase
from ..supervisor.supervisor import Supervisor
from . import installer
from .archive import ArchiveLimits
from .gates import Report, run_gates
from .installer import InstallError, Layout
from .manifest import Manifest
from .package import InspectContext, Package, inspect_package
from .pipeline import (
    Activate,
    Approved,
    Begin,
    Command,
    Disable,
    Discard,
    Enable,
    Event,
    Job,
    OperatorRejected,
    Quarantine,
    Refuse,
    Release,
    Resume,
    Run,
    Stage,
    StartWorker,
    StepDone,
    StepFailed,
    StopWorker,
    Validated,
    step,
)

log = logging.getLogger(__name__)

TERMINAL = {Stage.REJECTED}


def _job(row: records.InstallRow) -> Job:
    return msgspec.convert(row.job, Job)


class Installs:
    def __init__(
        self, config: Config, data_dir: Path, db: Database, supervisor: Supervisor
    ) -> None:
        self.config = config
        self.db = db
        self.supervisor = supervisor
        self.layout = Layout(data_dir)
        store = config.security.trust_store or str(data_dir / "trusted_keys")
        self.trust = load_trust_store(Path(store))
        self._locks: defaultdict[str, trio.Lock] = defaultdict(trio.Lock)
        self._steps: dict[str, trio.CancelScope] = {}
        self._nursery: trio.Nursery | None = None
        self._changed = trio.Event()
        supervisor.on_quarantine = self._quarantined_by_policy
        # told when a plugin's worker is started or stopped (the gateway binds its listener)
        self.on_enabled: Callable[[str, Manifest], Awaitable[None]] = _nothing
        self.on_disabled: Callable[[str], Awaitable[None]] = _nothing

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            await self.recover()
            task_status.started()
            await trio.sleep_forever()

    # --- reading ------------------------------------------------------------------------------

    def context(self, exclude: str = "") -> InspectContext:
        c = self.config.install
        installed = {
            row.plugin_key: row.manifest.get("dependencies", {})
            for row in records.all_installs(self.db)
            if row.active and row.plugin_key != exclude
        }
        limits = ArchiveLimits(
            max_package_bytes=c.max_package_bytes,
            max_files=c.max_files,
            max_total_bytes=c.max_total_bytes,
            max_ratio=c.max_compression_ratio,
        )
        return InspectContext(
            __version__, limits, self.trust, self.config.security.require_signatures, installed
        )

    def describe(self, key: str) -> dict[str, Any]:
        """Install details for the plugin detail route."""
        rows = records.installs_of(self.db, key)
        if not rows:
            return {}
        active = next((r for r in rows if r.active), None)
        latest = rows[-1]
        out: dict[str, Any] = {"install": self._install_view(active or latest)}
        if active is not None and latest is not active and _job(latest).stage not in TERMINAL:
            out["upgrade"] = self._install_view(latest)
        elif active is not None and latest is not active:
            out["last_upgrade"] = self._install_view(latest)
        return out

    async def wait_settled(self, key: str) -> records.InstallRow:
        """Wait until the plugin's latest install has no step running and needs no approval."""
        while True:
            rows = records.installs_of(self.db, key)
            if rows:
                job = _job(rows[-1])
                if not job.running and job.stage is not Stage.UPLOADED:
                    return rows[-1]
            await self._changed.wait()

    def _install_view(self, row: records.InstallRow) -> dict[str, Any]:
        job = _job(row)
        pending = row.approval if job.stage is Stage.DEPENDENCIES_PENDING else None
        return {
            "id": row.id,
            "version": row.version,
            "state": job.stage.value,
            "reason": job.reason,
            "step": job.running or None,
            "active": row.active,
            "pending_approval": pending,
            "last_run_id": row.last_run_id,
            "created_at": row.created_at,
            "updated_at": row.updated_at,
        }

    def _rows(self, key: str) -> list[records.InstallRow]:
        rows = records.installs_of(self.db, key)
        if not rows:
            raise NotFound(f"no installed plugin {key!r}", {"plugin": key})
        return rows

    def _target(self, key: str) -> records.InstallRow:
        """The install that operator actions apply to: the active one, else the latest."""
        rows = self._rows(key)
        return next((r for r in rows if r.active), rows[-1])

    # --- operator actions ------------------------------------------------------------------

    async def upload(self, data: bytes, operator: str) -> records.InstallRow:
        package, problems = await trio.to_thread.run_sync(inspect_package, data, self.context())
        if package is None:
            detail = [msgspec.to_builtins(p) for p in problems]
            records.audit(self.db, operator, "package.refused", detail={"problems": detail})
            raise Unprocessable(
                f"the package was refused: {len(problems)} problem(s)", {"problems": detail}
            )
        key = package.key
        async with self._locks[key]:
            rows = records.installs_of(self.db, key)
            for row in rows:
                job = _job(row)
                if job.running or job.stage is Stage.DEPENDENCIES_PENDING:
                    raise Conflict(
                        f"version {row.version} of {key!r} is still being installed "
                        f"({job.stage.value})",
                        {"install": row.id},
                    )
            active = next((r for r in rows if r.active), None)
            if active is not None and active.version == package.version:
                raise Conflict(
                    f"{key} {package.version} is already installed; "
                    "upload a new version or uninstall first"
                )
            install_id = uuid.uuid4().hex
            path = self.layout.package(install_id)
            await trio.to_thread.run_sync(_write_file, path, data)
            enable = self.config.install.auto_enable or (
                active is not None and _job(active).stage is Stage.ENABLED
            )
            hashes = package.plugin_id.files if package.plugin_id else {}
            await records.create_install(
                self.db,
                install_id,
                plugin_key=key,
                version=package.version,
                job=msgspec.to_builtins(Job(enable_when_verified=enable)),
                package_digest=package.digest,
                manifest=msgspec.to_builtins(package.manifest),
                file_hashes=hashes,
            )
            records.audit(
                self.db,
                operator,
                "package.uploaded",
                plugin=key,
                risk_score=risk_score(package.manifest.scopes),
                detail={"install": install_id, "version": package.version},
            )
        await self._drive(install_id, Begin(), inline=True)  # validation answers the upload
        created = records.get_install(self.db, install_id)
        assert created is not None
        return created

    async def approve(self, key: str, digest: str, operator: str) -> None:
        row = self._pending(key)
        await self._drive(row.id, Approved(digest))
        records.audit(
            self.db,
            operator,
            "plugin.approved",
            plugin=key,
            risk_score=int((row.approval or {}).get("risk_score", 0)),
            detail={"install": row.id, "approval": row.approval},
        )

    async def reject(self, key: str, operator: str, reason: str) -> None:
        row = self._pending(key)
        await self._drive(row.id, OperatorRejected(reason))
        records.audit(
            self.db,
            operator,
            "plugin.rejected",
            plugin=key,
            detail={"install": row.id, "reason": reason},
        )

    def _pending(self, key: str) -> records.InstallRow:
        for row in reversed(self._rows(key)):
            if _job(row).stage is Stage.DEPENDENCIES_PENDING:
                return row
        raise Conflict(f"nothing of {key!r} is waiting for approval")

    async def enable(self, key: str, properties: list[str], operator: str) -> None:
        for pid in properties:
            if records.get_property(self.db, pid) is None:
                raise NotFound(f"no property {pid!r}", {"property": pid})
        row = self._target(key)
        for pid in properties:
            await records.assign_property(self.db, key, pid)
        await self._drive(row.id, Enable())
        actor = self.supervisor.directory.get(key)
        if actor is not None:
            actor.refresh_token()
        records.audit(
            self.db, operator, "plugin.enabled", plugin=key, detail={"properties": properties}
        )

    async def disable(self, key: str, properties: list[str], operator: str) -> None:
        row = self._target(key)
        if properties:
            for pid in properties:
                await records.unassign_property(self.db, key, pid)
            actor = self.supervisor.directory.get(key)
            if actor is not None:
                actor.refresh_token()
        else:
            await self._drive(row.id, Disable())
            self.supervisor.tokens.revoke(key)
        records.audit(
            self.db, operator, "plugin.disabled", plugin=key, detail={"properties": properties}
        )

    async def quarantine(self, key: str, reason: str, operator: str) -> None:
        row = self._target(key)
        actor = self.supervisor.directory.get(key)
        if actor is not None and actor.phase is not Phase.QUARANTINED:
            actor.quarantine(
                reason
            )  # revokes at once, records evidence, tells _quarantined_by_policy
        else:
            self.supervisor.tokens.revoke(key)
            await self._drive(row.id, Quarantine(reason))
        records.audit(
            self.db, operator, "plugin.quarantined", plugin=key, detail={"reason": reason}
        )

    def _quarantined_by_policy(self, key: str, rule: str, reason: str) -> None:
        """The supervisor quarantined a worker: move its install job along (dev plugins: record)."""
        if not records.installs_of(self.db, key):
            records.set_plugin_state(self.db, key, "QUARANTINED", reason)
            return
        assert self._nursery is not None
        row = self._target(key)
        self._nursery.start_soon(self._drive_logged, row.id, Quarantine(f"{rule}: {reason}"))

    async def release(self, key: str, operator: str) -> None:
        row = self._target(key)
        await self._drive(row.id, Release())
        records.audit(self.db, operator, "plugin.release_requested", plugin=key)

    async def run_tests(self, key: str, operator: str) -> str:
        """Run the full suite on the active installed copy in the background; returns the run id."""
        row = self._target(key)
        if not row.active:
            raise Conflict(f"{key!r} has no installed version to test yet")
        run_id = uuid.uuid4().hex
        await records.start_test_run(self.db, run_id, key, row.version)
        assert self._nursery is not None
        self._nursery.start_soon(self._background_tests, row, run_id)
        records.audit(
            self.db, operator, "plugin.tests_requested", plugin=key, detail={"run_id": run_id}
        )
        return run_id

    async def _background_tests(self, row: records.InstallRow, run_id: str) -> None:
        try:
            await self._gates(row, self.layout.tree(row.plugin_key, row.id), run_id)
        except Exception:
            log.exception("test run %s of %s failed", run_id, row.plugin_key)

    async def uninstall(self, key: str, operator: str) -> None:
        rows = self._rows(key)
        async with self._locks[key]:
            for row in rows:
                scope = self._steps.pop(row.id, None)
                if scope is not None:
                    scope.cancel()
            self.supervisor.tokens.revoke(key)
            await self.on_disabled(key)
            await self.supervisor.remove(key, "plugin uninstalled")
            await records.delete_plugin(self.db, key)
            for row in rows:
                for path in (
                    self.layout.staging(row.id),
                    self.layout.package(row.id),
                    self.layout.tree(key, row.id),
                ):
                    await trio.to_thread.run_sync(installer.remove, path)
        records.record_event(
            self.db, key, "uninstalled", state="UNINSTALLED", reason=f"uninstalled by {operator}"
        )
        records.audit(self.db, operator, "plugin.uninstalled", plugin=key)

    # --- the pipeline driver ---------------------------------------------------------------

    async def _drive(self, install_id: str, event: Event, *, inline: bool = False) -> None:
        """Step the job; steps it starts run in the background, or here when `inline`."""
        row = records.get_install(self.db, install_id)
        if row is None:
            return  # uninstalled meanwhile
        key = row.plugin_key
        async with self._locks[key]:
            row = records.get_install(self.db, install_id)
            if row is None:
                return
            job = _job(row)
            new, commands = step(job, event)
            refused = [c for c in commands if isinstance(c, Refuse)]
            if refused:
                raise Conflict(refused[0].reason, {"state": job.stage.value})
            if new != job:
                await records.save_install(self.db, install_id, msgspec.to_builtins(new))
                records.record_event(
                    self.db,
                    key,
                    "install_state",
                    state=new.stage.value,
                    reason=new.reason,
                    detail={"install": install_id, "version": row.version, "step": new.running},
                )
            for command in commands:
                await self._execute(row, command)
            await self._sync_plugin_row(key)
            self._changed.set()
            self._changed = trio.Event()
        # steps drive the job again when they end, so they run outside the lock
        for command in commands:
            if isinstance(command, Run):
                if inline:
                    await self._run_step(install_id, command.step)
                else:
                    assert self._nursery is not None
                    self._nursery.start_soon(self._run_step, install_id, command.step)

    async def _execute(self, row: records.InstallRow, command: Command) -> None:
        key = row.plugin_key
        match command:
            case Activate():
                await self._activate(row)
            case StartWorker():
                resources = row.manifest.get("resources") or {}
                spec = installer.worker_spec(
                    key, self.layout.tree(key, row.id), resources.get("memory_limit", 256)
                )
                actor = await self.supervisor.replace(spec, row.manifest)
                if actor.phase is Phase.QUARANTINED:
                    actor.release()
                actor.start()
                await self.on_enabled(key, msgspec.convert(row.manifest, Manifest))
            case StopWorker():
                running = self.supervisor.directory.get(key)
                if running is not None:
                    running.stop("disabled")
                await self.on_disabled(key)
            case Discard():
                await trio.to_thread.run_sync(installer.remove, self.layout.staging(row.id))
                await trio.to_thread.run_sync(installer.remove, self.layout.package(row.id))
                if not row.active:
                    await trio.to_thread.run_sync(installer.remove, self.layout.tree(key, row.id))

    async def _activate(self, row: records.InstallRow) -> None:
        key = row.plugin_key
        previous = next((r for r in records.installs_of(self.db, key) if r.active), None)
        await records.activate_install(self.db, key, row.id)
        actor = self.supervisor.directory.get(key)
        if previous is not None and previous.id != row.id:
            superseded = msgspec.structs.replace(
                _job(previous),
                stage=Stage.DISABLED,
                reason=f"superseded by {row.version}",
                running="",
            )
            await records.save_install(self.db, previous.id, msgspec.to_builtins(superseded))
            await self.supervisor.remove(key, f"upgraded to {row.version}")
            await trio.to_thread.run_sync(installer.remove, self.layout.tree(key, previous.id))
            records.record_event(
                self.db,
                key,
                "upgraded",
                state=Stage.VERIFIED.value,
                reason=f"{previous.version} -> {row.version}",
            )
        elif actor is not None and actor.phase is Phase.QUARANTINED:
            actor.release()

    async def _run_step(self, install_id: str, name: str) -> None:
        event: Event
        with trio.CancelScope() as scope:
            self._steps[install_id] = scope
            try:
                row = records.get_install(self.db, install_id)
                if row is None:
                    return
                event = await getattr(self, f"_step_{name}")(row)
            except InstallError as exc:
                event = StepFailed(str(exc))
            except Exception as exc:
                log.exception("install %s: step %s failed", install_id, name)
                event = StepFailed(f"internal error during {name}: {type(exc).__name__}: {exc}")
            finally:
                self._steps.pop(install_id, None)
        if not scope.cancelled_caught:
            await self._drive_logged(install_id, event)

    async def _drive_logged(self, install_id: str, event: Event) -> None:
        """For background tasks: a failure is logged and recorded, never raised into the server."""
        try:
            await self._drive(install_id, event)
        except Exception as exc:
            log.exception("install %s: could not apply %s", install_id, type(event).__name__)
            row = records.get_install(self.db, install_id)
            if row is not None:
                records.record_event(
                    self.db,
                    row.plugin_key,
                    "install_error",
                    reason=f"{type(event).__name__}: {exc}",
                )

    async def _package(self, row: records.InstallRow) -> Package:
        data = await trio.Path(self.layout.package(row.id)).read_bytes()
        package, problems = await trio.to_thread.run_sync(
            inspect_package, data, self.context(exclude=row.plugin_key)
        )
        if package is None:
            raise InstallError("; ".join(f"{p.code} at {p.path}: {p.message}" for p in problems))
        return package

    async def _step_validate(self, row: records.InstallRow) -> Event:
        package = await self._package(row)
        approval = self._approval(package)
        if approval is None:
            return Validated()
        await records.set_install_approval(self.db, row.id, approval)
        return Validated(approval_digest=approval["digest"])

    def _approval(self, package: Package) -> dict[str, Any] | None:
        """What an operator must approve, with its digest; None when nothing needs approval."""
        level = Level.parse(self.config.security.auto_approve_level)
        scopes = [s for s in package.manifest.scopes if needs_approval(s, level)]
        if not package.requirements and not scopes:
            return None
        body: dict[str, Any] = {
            "requirements": package.requirements,
            "scopes": [
                {"scope": s, "level": SCOPES[s].level.name.lower(), "risk": SCOPES[s].risk}
                for s in scopes
            ],
            "risk_score": risk_score(package.manifest.scopes),
            "package_digest": package.digest,
        }
        body["digest"] = hashlib.sha256(signing.canonical_json(body)).hexdigest()
        return body

    async def _step_install(self, row: records.InstallRow) -> Event:
        package = await self._package(row)
        staging = self.layout.staging(row.id)
        await trio.to_thread.run_sync(installer.write_tree, dict(package.files), staging)
        await installer.install_requirements(staging, self.config.install)
        return StepDone()

    async def _step_test(self, row: records.InstallRow) -> Event:
        job = _job(row)
        key = row.plugin_key
        tree = self.layout.tree(key, row.id) if job.in_place else self.layout.staging(row.id)
        run_id = uuid.uuid4().hex
        await records.start_test_run(self.db, run_id, key, row.version)
        await records.set_install_test_run(self.db, row.id, run_id)
        report = await self._gates(row, tree, run_id)
        if report.ok:
            return StepDone()
        return StepFailed("test gates failed: " + " | ".join(report.failures()))

    async def _gates(self, row: records.InstallRow, tree: Path, run_id: str) -> Report:
        package = await self._package(row)
        try:
            report = await run_gates(
                installer.worker_spec(
                    row.plugin_key, tree, package.manifest.resources.memory_limit
                ),
                package.manifest,
                package.test_plan,
                self.config.supervisor,
                burst=self.config.install.load_burst,
            )
        except BaseException:
            with trio.CancelScope(shield=True):
                await records.finish_test_run(
                    self.db, run_id, "failed", {"ok": False, "error": "the run was interrupted"}
                )
            raise
        await records.finish_test_run(
            self.db, run_id, "passed" if report.ok else "failed", msgspec.to_builtins(report)
        )
        return report

    async def _step_promote(self, row: records.InstallRow) -> Event:
        staging, tree = self.layout.staging(row.id), self.layout.tree(row.plugin_key, row.id)
        await trio.to_thread.run_sync(installer.promote, staging, tree)
        return StepDone()

    async def _step_verify(self, row: records.InstallRow) -> Event:
        tree = self.layout.tree(row.plugin_key, row.id)
        problems = await trio.to_thread.run_sync(installer.verify_tree, tree, row.file_hashes)
        if problems:
            return StepFailed(
                "the installed tree differs from plugin.id: "
                + "; ".join(f"{p.code} {p.path}" for p in problems)
            )
        package = await self._package(row)
        report = await run_gates(
            installer.worker_spec(row.plugin_key, tree, package.manifest.resources.memory_limit),
            package.manifest,
            package.test_plan,
            self.config.supervisor,
            only=("self",),
        )
        if not report.ok:
            return StepFailed(
                "self-test of the installed copy failed: " + " | ".join(report.failures())
            )
        return StepDone()

    # --- records and recovery -----------------------------------------------------------------

    async def _sync_plugin_row(self, key: str) -> None:
        """The plugin record shows the active install, or the latest while none is active."""
        rows = records.installs_of(self.db, key)
        if not rows:
            return
        active = next((r for r in rows if r.active), None)
        shown = active or rows[-1]
        job = _job(shown)
        tree = str(self.layout.tree(key, shown.id)) if active else ""
        await records.upsert_plugin(
            self.db,
            key,
            name=str(shown.manifest.get("name", key)),
            version=shown.version,
            state=job.stage.value,
            reason=job.reason,
            source_dir=tree,
            manifest=shown.manifest,
        )

    async def recover(self) -> None:
        """After a start: fail interrupted test runs, resume unfinished jobs, start what is on."""
        interrupted = await records.mark_interrupted_test_runs(self.db)
        if interrupted:
            log.warning("marked %d interrupted test runs as failed", interrupted)
        for row in records.all_installs(self.db):
            job = _job(row)
            if job.running or job.stage in (Stage.UPLOADED, Stage.ENABLED):
                if job.stage is Stage.ENABLED and not row.active:
                    continue
                log.info("resuming %s %s (%s)", row.plugin_key, row.version, job.stage.value)
                await self._drive(row.id, Resume())
        await trio.to_thread.run_sync(self._remove_orphans)

    def _remove_orphans(self) -> None:
        rows = records.all_installs(self.db)
        staged = {r.id for r in rows if _job(r).running in ("install", "test", "promote")}
        staging_root = self.layout.data_dir / "staging"
        if staging_root.is_dir():
            for path in staging_root.iterdir():
                if path.name not in staged:
                    installer.remove(path)
        trees = {(r.plugin_key, r.id) for r in rows}
        plugins_root = self.layout.data_dir / "plugins"
        if plugins_root.is_dir():
            for key_dir in plugins_root.iterdir():
                for tree in key_dir.iterdir():
                    if (key_dir.name, tree.name) not in trees:
                        installer.remove(tree)


async def _nothing(*args: object) -> None:
    return None


def _write_file(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".part")
    tmp.write_bytes(data)
    tmp.replace(path)
