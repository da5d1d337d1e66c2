"""The install service: what operators (and the supervisor's events) ask of installed plugins.

It composes the parts of installing: `PackageReader` and `Steps` (steps.py) do the I/O of each
step, `Driver` (driver.py) steps the pure pipeline and carries out its commands, `Workers`
(workers.py) is the one start path of a worker and its listener. Collaborators arrive through
the constructor; the service subscribes to the supervisor's actor events there.

The service is the one writer of a plugin's state (the `enhanced_plugins` row): installed
plugins through the driver, plugins run from source (`run_from_source`) here. A `Quarantined`
event from the supervisor drives the pipeline like an operator's quarantine; with
`probation=True` (a crash loop of a plugin that had served well) it schedules probation.

Every start of an installed plugin is checked first (`Integrity`, integrity.py, shared with
the steps that run its tests): a tree that differs from what was installed is not started,
the evidence is recorded (`integrity_failed` event and audit row, naming each changed,
missing or extra file) and the plugin is quarantined. Each install view carries the security
rating of what that version holds (rating.py), beside the pending approval, not in its digest.

Operator actions change nothing when the pipeline refuses them (an enable's property
assignments happen under the plugin's lock only once the pipeline took it). An uninstall
reads the plugin's installs under that lock, so an upload that got in first is removed with
them (and answers 409). Operator test runs: one per plugin at a time (409 names the run under
way), and at most `install.max_concurrent_suites` full suites at once server-wide (the
others `queued`).
"""

from __future__ import annotations

import contextlib
import logging
import time
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import msgspec
import trio

from ..config import Config
from ..errors import (
    BadRequest,
    Conflict,
    DevBuildsDisabled,
    HasDependents,
    NotFound,
    Unprocessable,
)
from ..security.scopes import risk_score
from ..security.trust import TrustStore
from ..store import records
from ..store.db import Database
from ..supervisor.actor import WorkerActor
from ..supervisor.events import ActorEvent, Quarantined
from ..supervisor.policy import Phase
from ..supervisor.supervisor import Supervisor
from . import installer
from .approval import wrong_digest_message
from .catalog import Catalog
from .dependencies import Dependencies
from .devloop import is_dev_build
from .driver import Driver, job_of, shown_install
from .gates import run_gates
from .install_views import describe_installs
from .installer import Layout
from .integrity import Integrity, record_failure
from .lifecycle import Lifecycle
from .manifest import Manifest
from .pipeline import (
    Approved,
    Begin,
    Disable,
    Enable,
    Job,
    OperatorRejected,
    Quarantine,
    Release,
    Stage,
)
from .problems import Problem
from .rating import Rating, security_rating
from .steps import GateRunner, PackageReader, Steps
from .workers import PluginPorts, Workers

log = logging.getLogger(__name__)

FROM_SOURCE = "running from source"
SETTLED_STAGES = {"VERIFIED", "ENABLED", "DISABLED", "REJECTED", "QUARANTINED"}


class Installs:
    def __init__(
        self,
        config: Config,
        data_dir: Path,
        db: Database,
        supervisor: Supervisor,
        ports: PluginPorts,
        *,
        gates: GateRunner = run_gates,
        integrity: Integrity | None = None,
    ) -> None:
        """`integrity` (shared with the supervisor's restarts, for its cache) checks every
        installed tree before a worker runs from it."""
        self.config = config
        self.db = db
        self.supervisor = supervisor
        self.layout = Layout(data_dir)
        self.trust = TrustStore(Path(config.security.trust_store or data_dir / "trusted_keys"))
        self.reader = PackageReader(config, db, self.trust)
        self.integrity = integrity if integrity is not None else Integrity(db)
        self.workers = Workers(
            supervisor, ports, check=self.integrity.verify_before_start, refused=self._refused
        )
        self.steps = Steps(
            config,
            db,
            self.layout,
            self.reader,
            gates,
            sandbox=supervisor.sandbox,
            integrity=self.integrity,
        )
        self.driver = Driver(config, db, self.layout, self.steps, self.workers)
        self.dependencies = Dependencies(db)
        self.lifecycle = Lifecycle(db, supervisor.directory)
        install = config.install
        self.catalog = Catalog(
            install.catalog_dir, install.max_package_bytes, install.catalog_scan_s
        )
        supervisor.observers.subscribe(self.lifecycle.observe)
        self._nursery: trio.Nursery | None = None
        self._tests: dict[str, trio.CancelScope] = {}  # key -> its operator's test run
        supervisor.observers.subscribe(self._on_actor_event)

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            self.driver.attach(nursery)
            await nursery.start(self.dependencies.run)
            await nursery.start(self.catalog.run)
            await self.recover()
            task_status.started()
            await trio.sleep_forever()

    async def recover(self) -> None:
        await self.driver.recover()
        await self._forget_stale_sources()

    # --- reading ------------------------------------------------------------------------------

    def describe(self, key: str, egress_grants: Sequence[str] = ()) -> dict[str, Any]:
        """Install details for the plugin detail route; `egress_grants` are the operator's
        grants to the plugin (for the security rating of each install shown)."""
        rows = records.installs_of(self.db, key)
        return describe_installs(rows, self.config, lambda row: self.rating(row, egress_grants))

    @property
    def sandbox_on(self) -> bool:
        return self.config.security.sandbox != "off"

    def rating(self, row: records.InstallRow, egress_grants: Sequence[str] = ()) -> Rating:
        """The security rating of what this install holds, on this server (rating.py)."""
        requirements = row.approval.requirements if row.approval is not None else []
        return security_rating(row.manifest, requirements, self.sandbox_on, egress_grants)

    def plugin_rating(self, key: str, egress_grants: Sequence[str] = ()) -> Rating | None:
        """The rating of the install the plugin's record shows; None for a plugin that is
        not installed (run from source: the registry rates it)."""
        rows = records.installs_of(self.db, key)
        return self.rating(shown_install(rows), egress_grants) if rows else None

    async def wait_settled(self, key: str) -> records.InstallRow:
        """Wait until the plugin's latest install has no step running and needs no approval."""
        while True:
            rows = records.installs_of(self.db, key)
            if rows:
                job = job_of(rows[-1])
                if not job.running and job.stage is not Stage.UPLOADED:
                    return rows[-1]
            await self.driver.changed()

    def _rows(self, key: str) -> list[records.InstallRow]:
        rows = records.installs_of(self.db, key)
        if not rows:
            raise NotFound(f"no installed plugin {key!r}", {"plugin": key})
        return rows

    # --- operator actions ------------------------------------------------------------------

    async def upload(self, data: bytes, operator: str) -> records.InstallRow:
        package, problems = await self.reader.inspect(data)
        if package is None:
            detail = [msgspec.to_builtins(p) for p in problems]
            records.audit(self.db, operator, "package.refused", detail={"problems": detail})
            raise Unprocessable(
                f"the package was refused: {len(problems)} problem(s)", {"problems": detail}
            )
        key = package.key
        if is_dev_build(package.version) and not self.config.install.allow_dev_builds:
            raise DevBuildsDisabled(
                f"{key} {package.version} is a development build, and this server takes none: "
                "set install.allow_dev_builds = true (a development server only)",
                {"plugin": key, "version": package.version},
            )
        async with self.driver.lock(key):
            rows = records.installs_of(self.db, key)
            if not rows and self.supervisor.directory.get(key) is not None:
                raise Conflict(
                    f"{key!r} is running from source; restart without --plugin-dir to install it"
                )
            for row in rows:
                job = job_of(row)
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
                active is not None and job_of(active).stage is Stage.ENABLED
            )
            hashes = package.plugin_id.files if package.plugin_id else {}
            await records.create_install(
                self.db,
                install_id,
                plugin_key=key,
                version=package.version,
                job=msgspec.to_builtins(
                    Job(enable_when_verified=enable, test_plan=package.test_plan)
                ),
                package_digest=package.digest,
                manifest=package.manifest,
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
        await self.driver.drive(install_id, Begin(), inline=True)  # validation answers the upload
        created = records.get_install(self.db, install_id)
        if created is None:
            raise Conflict(
                f"{key!r} was uninstalled while this upload of {package.version} was being "
                "validated; upload it again to install it",
                {"plugin": key, "install": install_id},
            )
        if is_dev_build(package.version) and self._nursery is not None:
            previous = active.version if active is not None else None
            self._nursery.start_soon(self._record_reload, key, install_id, previous)
        return created

    async def _record_reload(self, key: str, install_id: str, previous: str | None) -> None:
        """A development build settled: `dev_reload` on the timeline, gone live or not."""
        with trio.move_on_after(self.config.install.pip_timeout_s + 600):
            while True:
                row = records.get_install(self.db, install_id)
                if row is None:
                    return  # uninstalled meanwhile
                job = job_of(row)
                if not job.running and job.stage.value in SETTLED_STAGES:
                    break
                await self.driver.changed()
            live = row.active and job.stage in (Stage.VERIFIED, Stage.ENABLED)
            records.record_event(
                self.db,
                key,
                "dev_reload",
                reason=job.reason if not live else "",
                detail={
                    "previous": previous,
                    "version": row.version,
                    "success": live,
                    "state": job.stage.value,
                },
            )

    async def approve(self, key: str, digest: str, operator: str) -> None:
        row = self._pending(key)
        if row.approval is not None and digest != row.approval.digest:
            raise Conflict(
                wrong_digest_message(digest, row.approval),
                {"state": Stage.DEPENDENCIES_PENDING.value, "echo": "pending_approval.digest"},
            )
        await self.driver.drive(row.id, Approved(digest))
        approved = {"version": row.version, "digest": digest}
        self.lifecycle.notify(key, "approved", detail=approved, version=row.version)
        records.audit(
            self.db,
            operator,
            "plugin.approved",
            plugin=key,
            risk_score=row.approval.risk_score if row.approval else 0,
            detail={
                "install": row.id,
                "approval": msgspec.to_builtins(row.approval) if row.approval else None,
                "security_rating": self.rating(row).score,  # as it stood when approved
            },
        )

    async def reject(self, key: str, operator: str, reason: str) -> None:
        row = self._pending(key)
        await self.driver.drive(row.id, OperatorRejected(reason))
        records.audit(
            self.db,
            operator,
            "plugin.rejected",
            plugin=key,
            detail={"install": row.id, "reason": reason},
        )

    def _pending(self, key: str) -> records.InstallRow:
        for row in reversed(self._rows(key)):
            if job_of(row).stage is Stage.DEPENDENCIES_PENDING:
                return row
        raise Conflict(f"nothing of {key!r} is waiting for approval")

    async def enable(self, key: str, properties: list[str], operator: str) -> None:
        for pid in properties:
            if records.get_property(self.db, pid) is None:
                raise NotFound(f"no property {pid!r}", {"property": pid})
        row = shown_install(self._rows(key))
        self.dependencies.check_enable(key, properties)  # its dependencies first (409)

        async def assign() -> None:  # only once the pipeline took the enable
            for pid in properties:
                await records.assign_property(self.db, key, pid)

        await self.driver.drive(row.id, Enable(), accepted=assign)
        self.workers.refresh_token(key)
        for pid in properties:
            self.lifecycle.notify(key, "activated", property_id=pid)
        records.audit(
            self.db, operator, "plugin.enabled", plugin=key, detail={"properties": properties}
        )

    async def disable(self, key: str, properties: list[str], operator: str) -> None:
        row = shown_install(self._rows(key))
        leaving = properties or records.assigned_properties(self.db, key)

        async def tell() -> None:  # once the pipeline took it, before its worker stops
            for pid in leaving:
                self.lifecycle.notify(key, "deactivated", property_id=pid)

        if properties:
            await tell()
            for pid in properties:
                await records.unassign_property(self.db, key, pid)
            self.workers.refresh_token(key)
        else:
            await self.driver.drive(row.id, Disable(), accepted=tell)  # a 409 tells nothing
            self.supervisor.tokens.revoke(key)
        records.audit(
            self.db, operator, "plugin.disabled", plugin=key, detail={"properties": properties}
        )

    async def quarantine(self, key: str, reason: str, operator: str) -> None:
        """Quarantine now (an operator's quarantine also cancels a pending probation)."""
        rows = records.installs_of(self.db, key)
        source = None if rows else records.get_plugin(self.db, key)
        if not rows and source is None:
            raise NotFound(f"no plugin {key!r}", {"plugin": key})
        self.lifecycle.notify(key, "revoked", detail={"reason": f"quarantined: {reason}"})
        actor = self.supervisor.directory.get(key)
        if actor is not None and actor.phase is not Phase.QUARANTINED:
            actor.quarantine(reason)  # stops the worker, records its evidence
        self.supervisor.tokens.revoke(key)
        if rows:
            await self._quarantine_shown(key, reason)
        else:
            await self._source_quarantined(key, reason)
        records.audit(
            self.db, operator, "plugin.quarantined", plugin=key, detail={"reason": reason}
        )

    async def _quarantine_shown(self, key: str, reason: str) -> None:
        """Quarantine the install the plugin shows; if an upgrade's hand over made another one
        active while this waited for the plugin's lock, quarantine that one too."""
        done: set[str] = set()
        for _ in range(3):
            shown = shown_install(records.installs_of(self.db, key))
            if shown.id in done:
                return
            if not done:
                await self.driver.drive(shown.id, Quarantine(reason))  # 409s reach the caller
            else:
                with contextlib.suppress(Conflict):  # the one that took over, if it can be
                    await self.driver.drive(shown.id, Quarantine(reason))
            done.add(shown.id)
            actor = self.supervisor.directory.get(key)
            if actor is not None and actor.phase is not Phase.QUARANTINED:
                actor.quarantine(reason)  # the worker that took over

    async def release(self, key: str, operator: str) -> None:
        rows = records.installs_of(self.db, key)
        if not rows and records.get_plugin(self.db, key) is not None:
            raise Conflict(
                f"{key!r} runs from source and has no test suite on record; "
                "restart the server with --plugin-dir to run it again"
            )
        row = shown_install(self._rows(key))
        await self.driver.drive(row.id, Release())
        records.audit(self.db, operator, "plugin.release_requested", plugin=key)

    async def run_tests(self, key: str, operator: str) -> str:
        """Run the full suite on the active installed copy in the background; returns the run id.

        One run per plugin at a time (a release's or a probation attempt's counts too); runs
        beyond the server-wide bound wait with status `queued`."""
        row = shown_install(self._rows(key))
        if not row.active:
            raise Conflict(f"{key!r} has no installed version to test yet")
        under_way = self.steps.suite_under_way(key)
        if under_way is not None:
            raise Conflict(
                f"test run {under_way} of {key!r} is still under way; wait for it to finish",
                {"plugin": key, "run_id": under_way},
            )
        run_id = uuid.uuid4().hex
        self.steps.claim(key, run_id)  # before the first await: a second request sees it
        try:
            await records.start_test_run(self.db, run_id, key, row.version)
        except BaseException:
            self.steps.unclaim(run_id)
            raise
        scope = trio.CancelScope()
        self._tests[key] = scope
        self.driver.spawn(self._background_tests, row, run_id, scope, key=key)
        records.audit(
            self.db, operator, "plugin.tests_requested", plugin=key, detail={"run_id": run_id}
        )
        return run_id

    async def _background_tests(
        self, row: records.InstallRow, run_id: str, scope: trio.CancelScope
    ) -> None:
        key = row.plugin_key
        try:
            with scope:
                await self.steps.full_suite(row, self.layout.tree(key, row.id), run_id)
        except Exception:
            log.exception("test run %s of %s failed", run_id, key)
        finally:
            self.steps.unclaim(run_id)  # also when cancelled before full_suite began
            if self._tests.get(key) is scope:
                del self._tests[key]

    async def uninstall(self, key: str, operator: str, *, force: bool = False) -> None:
        """Remove the plugin; refused (409 has_dependents) while others depend on it, unless
        `force`, which disables each of them with the reason."""
        dependents = self.dependencies.dependents(key)
        if dependents and not force:
            raise HasDependents(
                f"{', '.join(dependents)} depend{'s' if len(dependents) == 1 else ''} on {key}: "
                "uninstall or disable them first, or force it (they will be disabled)",
                {"dependents": dependents},
            )
        for dependent in dependents:
            await self._disable_dependent(dependent, f"its dependency {key} was uninstalled")
        async with self.driver.lock(key):
            rows = self._rows(key)  # inside the lock: an upload that got in first is included
            self.driver.forget(rows)  # steps under way and pending probation end here
            tests = self._tests.pop(key, None)
            if tests is not None:
                tests.cancel()
            self.lifecycle.notify(key, "revoked", detail={"reason": "uninstalled"})
            self.supervisor.tokens.revoke(key)
            await self.workers.remove(key, "plugin uninstalled")
            self.lifecycle.forget(key)
            await records.delete_plugin(self.db, key)
            for row in rows:
                for path in (
                    self.layout.staging(row.id),
                    self.layout.package(row.id),
                    self.layout.tree(key, row.id),
                ):
                    await trio.to_thread.run_sync(installer.remove, path)
            # its private /data goes with it: a later plugin of the same key starts empty
            plugin_data = self.layout.data_dir / "plugin-data" / key
            await trio.to_thread.run_sync(installer.remove, plugin_data)
            # and so do the files it kept through the core (lanes/storage.py)
            await trio.to_thread.run_sync(installer.remove, self.layout.data_dir / "storage" / key)
        records.record_event(
            self.db, key, "uninstalled", state="UNINSTALLED", reason=f"uninstalled by {operator}"
        )
        records.audit(
            self.db,
            operator,
            "plugin.uninstalled",
            plugin=key,
            detail={"forced": force, "dependents_disabled": dependents} if dependents else None,
        )

    async def _disable_dependent(self, key: str, reason: str) -> None:
        rows = records.installs_of(self.db, key)
        if rows:
            with contextlib.suppress(Conflict):  # already disabled, or not enabled at all
                await self.driver.drive(shown_install(rows).id, Disable(reason))
        else:
            await self.workers.stop(key, reason)  # run from source
        self.supervisor.tokens.revoke(key)

    # --- the trust store (admin routes: GET/POST /api/trust/keys, DELETE .../{id}) -----------

    def trusted_keys(self) -> list[dict[str, Any]]:
        """Every trusted publisher key: key_id, public_key (base64), added_at (if known).

        Reads the trust directory (a handful of small files) so hand-copied keys show at once.
        """
        return [msgspec.to_builtins(entry) for entry in self.trust.entries()]

    async def add_trusted_key(
        self, key_id: str, public_key_b64: str, operator: str
    ) -> dict[str, Any]:
        entry = await trio.to_thread.run_sync(self.trust.add, key_id, public_key_b64)
        records.audit(
            self.db,
            operator,
            "trust.key_added",
            detail={"key_id": entry.key_id, "public_key": entry.public_key},
        )
        return dict(msgspec.to_builtins(entry))

    async def remove_trusted_key(self, key_id: str, operator: str) -> None:
        await trio.to_thread.run_sync(self.trust.remove, key_id)
        records.audit(self.db, operator, "trust.key_removed", detail={"key_id": key_id})

    # --- plugins run from source (`serve --plugin-dir`) ------------------------------------

    async def run_from_source(self, root: Path, manifest: Manifest) -> WorkerActor:
        """Record a validated source tree's plugin as ENABLED and start it like any other.

        Its properties are the ones operators assign (kept across restarts); none by default.
        """
        key = manifest.key
        if records.installs_of(self.db, key):
            raise BadRequest(
                f"{key!r} is installed from a package; uninstall it to run it from {root}"
            )
        await records.upsert_plugin(
            self.db,
            key,
            name=manifest.name,
            version=manifest.version,
            state=Stage.ENABLED.value,
            reason=FROM_SOURCE,
            source_dir=str(root),
            manifest=manifest,
        )
        records.record_event(self.db, key, "source_started", state="ENABLED", reason=str(root))
        actor = await self.workers.start(key, root, manifest)
        if actor is None:  # a source tree has no install to check against: never refused
            raise Conflict(f"{key!r} could not be started from {root}")
        return actor

    async def _forget_stale_sources(self) -> None:
        """Source plugins of an earlier run that this run was not asked to start are not
        running: their records say so (until `--plugin-dir` starts them again)."""
        installed = {row.plugin_key for row in records.all_installs(self.db)}
        for row in records.list_plugins(self.db):
            if row.key not in installed and row.state == Stage.ENABLED.value:
                await records.upsert_plugin(
                    self.db,
                    row.key,
                    name=row.name,
                    version=row.version,
                    state=Stage.DISABLED.value,
                    reason="ran from source in an earlier run; start it with --plugin-dir",
                    source_dir=row.source_dir,
                    manifest=row.manifest,
                )

    async def _source_quarantined(self, key: str, reason: str) -> None:
        row = records.get_plugin(self.db, key)
        if row is None:
            return
        await records.upsert_plugin(
            self.db,
            key,
            name=row.name,
            version=row.version,
            state=Stage.QUARANTINED.value,
            reason=reason,
            source_dir=row.source_dir,
            manifest=row.manifest,
        )
        await self.workers.stop(key, reason)

    # --- integrity ---------------------------------------------------------------------------

    def _refused(self, key: str, tree: Path, problems: list[Problem]) -> None:
        """A start found the installed tree changed: record the evidence, quarantine (the
        pipeline is driven in the background: the refused start runs under the plugin's lock)."""
        reason = record_failure(self.db, key, tree.name, "start", problems)
        self.supervisor.tokens.revoke(key)
        self.driver.spawn(self._quarantine_tampered, tree.name, reason, key=key)

    async def _quarantine_tampered(self, install_id: str, reason: str) -> None:
        await self.driver.drive_logged(install_id, Quarantine(reason))

    def _on_actor_event(self, event: ActorEvent) -> None:
        if isinstance(event, Quarantined) and self._nursery is not None:
            # guarded: a failure is logged and recorded, never raised into the server
            self.driver.spawn(self._quarantined, event, key=event.key)

    async def _quarantined(self, event: Quarantined) -> None:
        """The supervisor quarantined a worker: the pipeline (and the record) follow."""
        key = event.key
        reason = f"{event.rule}: {event.reason}" if event.rule else event.reason
        if event.rule != "operator":  # an operator's quarantine said so already
            self.lifecycle.notify(key, "revoked", detail={"reason": f"quarantined: {reason}"})
        rows = records.installs_of(self.db, key)
        if not rows:
            await self._source_quarantined(key, reason)
            return
        c = self.config.supervisor
        at = time.time() + c.probation_s if event.probation and c.probation_attempts > 0 else None
        await self.driver.drive_logged(shown_install(rows).id, Quarantine(reason, probation_at=at))


def _write_file(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".part")
    tmp.write_bytes(data)
    tmp.replace(path)
