"""The install steps that the pipeline's `Run(step)` commands name, and package inspection.

Each step (validate, install, test, promote, verify) takes the job's row and returns the event
that ends it (`StepDone`, `StepFailed`, `Validated`); a step raises only `InstallError` (its
message is the operator-facing reason) or a bug. Packages are inspected against this server:
its archive limits, the trust store as it is on disk right now (re-read when it changed, off
the trio thread) and the dependencies of the installed plugins.

A package is inspected where something may have changed since: at upload, at validate (the
trust store) and at install (which needs its files, perhaps long after an approval). The test
suites and the self-test of `verify` use the manifest on the row and the test plan stored in
the job at upload. `install` records the hashes of what pip put in `site/`; before any worker
runs from a tree (every suite, staged or in place, and `verify`) the tree is checked against
plugin.id's hashes and that record (integrity.py): a difference fails the step with the
files named, and is recorded as an `integrity_failed` event and audit row.

Full suites are bounded server-wide (`install.max_concurrent_suites` at once, the others
wait with status `queued`) and known while under way (`suite_under_way(key)`). Test runs are stored
(`plugin_test_runs`) whatever their outcome, an interrupted one as failed.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import msgspec
import trio

from .. import __version__
from ..config import Config
from ..sandbox.launcher import Sandbox
from ..security.scopes import Level
from ..security.trust import TrustStore
from ..store import records
from ..store.db import Database
from ..store.records.installs import active_installs
from . import installer
from .approval import ResourceRequest, approval_for
from .archive import ArchiveLimits
from .gates import GateResult, Report, run_gates
from .installer import InstallError, Layout
from .integrity import Integrity, expected_of, record_failure
from .manifest import Installed, Manifest
from .package import InspectContext, Package, inspect_package
from .pipeline import Event, Job, StepDone, StepFailed, Validated
from .problems import Problem
from .testplan import TestPlan

# run_gates(spec, manifest, plan, supervisor_config, *, burst=, progress=, only=) -> Report
GateRunner = Callable[..., Awaitable[Report]]

STEPS = ("validate", "install", "test", "promote", "verify")


def describe_problems(problems: list[Problem]) -> str:
    return "; ".join(f"{p.code} at {p.path}: {p.message}" for p in problems)


class PackageReader:
    """Inspects packages the way this server does (limits, live trust store, installed deps)."""

    def __init__(self, config: Config, db: Database, trust: TrustStore) -> None:
        self.config = config
        self.db = db
        self.trust = trust

    async def context(self, exclude: str = "") -> InspectContext:
        c = self.config.install
        trust = await trio.to_thread.run_sync(self.trust.keys)
        installed = {
            row.plugin_key: Installed(row.version, dict(row.manifest.dependencies))
            for row in active_installs(self.db)
            if row.plugin_key != exclude
        }
        limits = ArchiveLimits(
            max_package_bytes=c.max_package_bytes,
            max_files=c.max_files,
            max_total_bytes=c.max_total_bytes,
            max_ratio=c.max_compression_ratio,
        )
        return InspectContext(
            __version__, limits, trust, self.config.security.require_signatures, installed
        )

    async def inspect(self, data: bytes, exclude: str = "") -> tuple[Package | None, list[Problem]]:
        ctx = await self.context(exclude)
        return await trio.to_thread.run_sync(inspect_package, data, ctx)


class Steps:
    def __init__(
        self,
        config: Config,
        db: Database,
        layout: Layout,
        reader: PackageReader,
        gates: GateRunner = run_gates,
        *,
        sandbox: Sandbox | None = None,
        integrity: Integrity | None = None,
    ) -> None:
        """`sandbox` runs the gates' workers (None: unsandboxed, `security.sandbox = "off"`);
        `integrity` checks a tree before any worker runs from it."""
        self.sandbox = sandbox
        self.integrity = integrity if integrity is not None else Integrity(db)
        self.config = config
        self.db = db
        self.layout = layout
        self.reader = reader
        self.gates = gates
        self.suites = trio.CapacityLimiter(config.install.max_concurrent_suites)
        self._under_way: dict[str, str] = {}  # run id -> plugin key, queued or running

    def suite_under_way(self, key: str) -> str | None:
        """The id of a full suite of `key` that is queued or running, if any."""
        return next((run for run, k in self._under_way.items() if k == key), None)

    def claim(self, key: str, run_id: str) -> None:
        """Count `run_id` as under way from now (before its first await: no two slip by)."""
        self._under_way[run_id] = key

    def unclaim(self, run_id: str) -> None:
        self._under_way.pop(run_id, None)

    async def run(self, name: str, row: records.InstallRow) -> Event:
        match name:
            case "validate":
                return await self.validate(row)
            case "install":
                return await self.install(row)
            case "test":
                return await self.test(row)
            case "promote":
                return await self.promote(row)
            case "verify":
                return await self.verify(row)
        raise InstallError(f"unknown step {name!r}")

    async def package(self, row: records.InstallRow) -> Package:
        """The job's package as uploaded, inspected again (the trust store may have changed)."""
        data = await trio.Path(self.layout.package(row.id)).read_bytes()
        package, problems = await self.reader.inspect(data, exclude=row.plugin_key)
        if package is None:
            raise InstallError(describe_problems(problems))
        return package

    async def validate(self, row: records.InstallRow) -> Event:
        package = await self.package(row)
        approval = approval_for(
            key=package.key,
            version=package.version,
            package_sha256=package.digest,
            scopes=package.manifest.scopes,
            requirements=package.requirements,
            auto_approve=Level.parse(self.config.security.auto_approve_level),
            allowed_domains=package.manifest.allowed_domains,
            resources=ResourceRequest(
                package.manifest.resources.memory_limit,
                package.manifest.resources.cpu_limit,
                package.manifest.resources.max_processes,
            ),
        )
        if approval is None:
            return Validated()
        await records.set_install_approval(self.db, row.id, approval)
        return Validated(approval_digest=approval.digest)

    async def install(self, row: records.InstallRow) -> Event:
        package = await self.package(row)
        staging = self.layout.staging(row.id)
        await trio.to_thread.run_sync(installer.write_tree, dict(package.files), staging)
        await installer.install_requirements(staging, self.config.install)
        site = await self.integrity.record_site(staging)
        await records.set_install_site_hashes(self.db, row.id, site)
        return StepDone()

    async def test(self, row: records.InstallRow) -> Event:
        """The full suite on the staged tree (or the installed one, for a release)."""
        key = row.plugin_key
        in_place = msgspec.convert(row.job, Job).in_place
        tree = self.layout.tree(key, row.id) if in_place else self.layout.staging(row.id)
        run_id = uuid.uuid4().hex
        self.claim(key, run_id)
        try:
            await records.start_test_run(self.db, run_id, key, row.version)
            await records.set_install_test_run(self.db, row.id, run_id)
        except BaseException:
            self.unclaim(run_id)
            raise
        report = await self.full_suite(row, tree, run_id)
        if report.ok:
            return StepDone()
        return StepFailed("test gates failed: " + " | ".join(report.failures()))

    async def plan(self, row: records.InstallRow) -> tuple[Manifest, TestPlan]:
        """The manifest and test plan stored at upload (older jobs: read from the package)."""
        plan = msgspec.convert(row.job, Job).test_plan
        if plan is None:
            plan = (await self.package(row)).test_plan
        return row.manifest, plan

    async def full_suite(self, row: records.InstallRow, tree: Path, run_id: str) -> Report:
        """Run every gate on `tree` and store the report under `run_id` (started already).

        Waits (status `queued`) while `install.max_concurrent_suites` others run."""
        self.claim(row.plugin_key, run_id)
        try:
            manifest, plan = await self.plan(row)
            problems = await self.integrity.verify(tree, expected_of(row))
            if problems:  # no worker runs from a tree that differs from what was installed
                reason = record_failure(self.db, row.plugin_key, row.id, "testing", problems)
                now = time.time()
                report = Report(False, [GateResult("integrity", False, detail=reason)], now, now)
            else:
                async with self._slot(run_id):
                    report = await self.gates(
                        installer.worker_spec(
                            row.plugin_key, tree, manifest.resources.memory_limit
                        ),
                        manifest,
                        plan,
                        self.config.supervisor,
                        burst=self.config.install.load_burst,
                        sandbox=self.sandbox,
                    )
        except BaseException:
            with trio.CancelScope(shield=True):
                await records.finish_test_run(
                    self.db, run_id, "failed", {"ok": False, "error": "the run was interrupted"}
                )
            raise
        finally:
            self.unclaim(run_id)
        report_json: dict[str, Any] = msgspec.to_builtins(report)
        await records.finish_test_run(
            self.db, run_id, "passed" if report.ok else "failed", report_json
        )
        return report

    @asynccontextmanager
    async def _slot(self, run_id: str) -> AsyncIterator[None]:
        """One of the `install.max_concurrent_suites` places; the run is `queued` until then."""
        try:
            self.suites.acquire_on_behalf_of_nowait(run_id)
        except trio.WouldBlock:
            await records.set_test_run_status(self.db, run_id, "queued")
            await self.suites.acquire_on_behalf_of(run_id)
            try:
                await records.set_test_run_status(self.db, run_id, "running")
            except BaseException:
                self.suites.release_on_behalf_of(run_id)
                raise
        try:
            yield
        finally:
            self.suites.release_on_behalf_of(run_id)

    async def promote(self, row: records.InstallRow) -> Event:
        staging, tree = self.layout.staging(row.id), self.layout.tree(row.plugin_key, row.id)
        await trio.to_thread.run_sync(installer.promote, staging, tree)
        return StepDone()

    async def verify(self, row: records.InstallRow) -> Event:
        tree = self.layout.tree(row.plugin_key, row.id)
        problems = await self.integrity.verify(tree, expected_of(row))
        if problems:
            return StepFailed(record_failure(self.db, row.plugin_key, row.id, "verify", problems))
        manifest, plan = await self.plan(row)
        report = await self.gates(
            installer.worker_spec(row.plugin_key, tree, manifest.resources.memory_limit),
            manifest,
            plan,
            self.config.supervisor,
            only=("self",),
            sandbox=self.sandbox,
        )
        if not report.ok:
            return StepFailed(
                "self-test of the installed copy failed: " + " | ".join(report.failures())
            )
        return StepDone()


# The status of a test run while it waits for a place, and after a restart. These belong with
# the other test-run queries in store/records/installs.py (kept here to stay in this change).
