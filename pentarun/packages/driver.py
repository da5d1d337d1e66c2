"""The pipeline driver: carries out `pipeline.step`'s commands; the one writer of install jobs
and of installed plugins' records.

Every change to an install job goes through `drive(install_id, event)` under the plugin's lock:
load the job, `step()`, store the new job, carry out the commands, then make the plugin record
(what the admin API shows) follow the job. Long steps run as background tasks that end by
driving StepDone or StepFailed. At start, `recover()` feeds every unfinished job `Resume`, so
a server killed at any point comes back consistent (see pipeline.py).

A `Cancel` command (an operator's quarantine during a release) cancels the job's running step;
a step's result is applied only if nothing cancelled the step meanwhile, so a late result of a
cancelled step never moves the job on.

Probation timers follow the jobs: a QUARANTINED job with `probation_due_at` has exactly one
timer; any change that clears or moves that time cancels it (an operator's release or
quarantine, an uninstall), and `recover()` re-arms the timers after a restart. When a timer
fires it drives `ProbationDue`; each attempt's end is recorded (`probation_attempt` event and
audit row, with the test run's id).

Background tasks (`spawn`) never raise into the service's nursery: a failure is logged and
recorded on the plugin (`install_error` event), and the server goes on.

Upgrades without an outage: when a verified upgrade of a plugin whose worker is running is
about to be activated and enabled, the new version's worker is started beside the old one
first (`Workers.hand_over`), before anything is stored. If it does not pass its handshake,
the verify step is failed instead (the upgrade ends REJECTED, its tree discarded, a
`handover_failed` event carries the evidence) and the old version serves on untouched. If it
does, the activation commits the hand over: new calls go to the new worker, the old one drains
in the background, and once it is gone its tree is deleted and `upgraded` is recorded with
what the drain did (`drained`).
"""

from __future__ import annotations

import logging
import time
from collections import defaultdict
from collections.abc import Awaitable, Callable
from typing import Any

import msgspec
import trio

from ..config import Config
from ..errors import Conflict
from ..store import records
from ..store.db import Database
from ..supervisor.handover import DrainReport, StartFailed
from ..supervisor.policy import Phase
from . import installer
from .installer import InstallError, Layout
from .pipeline import (
    Activate,
    Cancel,
    Command,
    Discard,
    Event,
    Job,
    ProbationDue,
    ProbationResult,
    Refuse,
    Resume,
    Run,
    Stage,
    StartWorker,
    StepFailed,
    StopWorker,
    step,
)
from .steps import Steps
from .workers import Handover, Workers

log = logging.getLogger(__name__)

NOT_SERVING = (Phase.IDLE, Phase.STOPPING, Phase.STOPPED, Phase.QUARANTINED)


def job_of(row: records.InstallRow) -> Job:
    return msgspec.convert(row.job, Job)


def shown_install(rows: list[records.InstallRow]) -> records.InstallRow:
    """The install a plugin's record shows and operator actions apply to: the active one, else
    the latest."""
    return next((r for r in rows if r.active), rows[-1])


class Driver:
    def __init__(
        self, config: Config, db: Database, layout: Layout, steps: Steps, workers: Workers
    ) -> None:
        self.config = config
        self.db = db
        self.layout = layout
        self.steps = steps
        self.workers = workers
        self._locks: defaultdict[str, trio.Lock] = defaultdict(trio.Lock)
        self._running: dict[str, trio.CancelScope] = {}  # install id -> its step's scope
        self._timers: dict[str, tuple[float, trio.CancelScope]] = {}  # install id -> probation
        self._nursery: trio.Nursery | None = None
        self._changed = trio.Event()

    def attach(self, nursery: trio.Nursery) -> None:
        """The nursery that background steps and timers run in (the service's)."""
        self._nursery = nursery

    def spawn(self, fn: Callable[..., Awaitable[Any]], *args: Any, key: str = "") -> None:
        """Run `fn(*args)` in the background; its failure is logged and recorded on `key`."""
        assert self._nursery is not None, "the install service is not running"
        self._nursery.start_soon(self._guarded, fn, args, key, name=getattr(fn, "__name__", fn))

    async def _guarded(
        self, fn: Callable[..., Awaitable[Any]], args: tuple[Any, ...], key: str
    ) -> None:
        try:
            await fn(*args)
        except Exception as exc:
            self.record_error(key, getattr(fn, "__name__", "background task"), exc)

    def record_error(self, key: str, what: str, exc: Exception) -> None:
        """Log a background task's failure and put it on the plugin's events; never raises."""
        log.error("%s%s failed", what, f" of {key}" if key else "", exc_info=exc)
        if not key:
            return
        try:
            records.record_event(
                self.db, key, "install_error", reason=f"{what}: {type(exc).__name__}: {exc}"
            )
        except Exception:
            log.exception("could not record the failure of %s of %s", what, key)

    def lock(self, key: str) -> trio.Lock:
        return self._locks[key]

    async def changed(self) -> None:
        """Wait for the next change of any job."""
        await self._changed.wait()

    def probation_due(self, install_id: str) -> float | None:
        timer = self._timers.get(install_id)
        return timer[0] if timer else None

    # --- driving ---------------------------------------------------------------------------

    async def drive(
        self,
        install_id: str,
        event: Event,
        *,
        inline: bool = False,
        accepted: Callable[[], Awaitable[None]] | None = None,
        step_scope: trio.CancelScope | None = None,
    ) -> None:
        """Step the job; steps it starts run in the background, or here when `inline`.

        `accepted` runs under the plugin's lock once the pipeline took the event, before its
        commands (so a refused event changes nothing). `step_scope` is the scope of the step
        whose result `event` is: it is dropped if that step was cancelled meanwhile.
        """
        row = records.get_install(self.db, install_id)
        if row is None:
            return  # uninstalled meanwhile
        key = row.plugin_key
        async with self._locks[key]:
            row = records.get_install(self.db, install_id)
            if row is None or (step_scope is not None and step_scope.cancel_called):
                return
            job = job_of(row)
            new, commands = step(job, event)
            refused = [c for c in commands if isinstance(c, Refuse)]
            if refused:
                raise Conflict(refused[0].reason, {"state": job.stage.value})
            if accepted is not None:
                await accepted()
            handover: Handover | None = None
            previous = self._taken_over(row, job, new, commands)
            if previous is not None:
                outcome = await self.workers.hand_over(
                    key, self.layout.tree(key, row.id), row.manifest
                )
                if isinstance(outcome, StartFailed):
                    reason = self._handover_failed(row, previous, outcome)
                    new, commands = step(job, StepFailed(reason))
                else:
                    handover = outcome
            try:
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
                    await self._execute(row, new, command, handover)
            except BaseException:
                if handover is not None and not handover.committed:
                    await handover.abandon("the upgrade did not complete")
                raise
            runs = [c.step for c in commands if isinstance(c, Run)]
            scope = trio.CancelScope()  # registered here, so a Cancel finds it at once
            if runs:
                self._running[install_id] = scope
            self._arm(install_id, key, new)
            await self.sync_plugin_row(key)
            self._changed.set()
            self._changed = trio.Event()
        # steps drive the job again when they end, so they run outside the lock
        for name in runs:
            if inline:
                await self._run_step(install_id, name, scope)
            else:
                self.spawn(self._run_step, install_id, name, scope, key=key)

    async def drive_logged(
        self, install_id: str, event: Event, *, step_scope: trio.CancelScope | None = None
    ) -> None:
        """For background tasks: a failure is logged and recorded, never raised into the server."""
        try:
            await self.drive(install_id, event, step_scope=step_scope)
        except Exception as exc:
            try:
                row = records.get_install(self.db, install_id)
            except Exception:
                row = None
            self.record_error(row.plugin_key if row else "", type(event).__name__, exc)

    async def _execute(
        self, row: records.InstallRow, new: Job, command: Command, handover: Handover | None
    ) -> None:
        key = row.plugin_key
        match command:
            case Activate():
                await self._activate(row, new, handover)
            case StartWorker() if handover is not None and handover.committed:
                pass  # the hand over started it, and it serves already
            case StartWorker():
                await self.workers.start(key, self.layout.tree(key, row.id), row.manifest)
            case StopWorker():
                await self.workers.stop(key, new.reason or "stopped")
            case Cancel():
                running = self._running.pop(row.id, None)
                if running is not None:
                    running.cancel()
            case Discard():
                await trio.to_thread.run_sync(installer.remove, self.layout.staging(row.id))
                await trio.to_thread.run_sync(installer.remove, self.layout.package(row.id))
                if not row.active:
                    await trio.to_thread.run_sync(installer.remove, self.layout.tree(key, row.id))
            case ProbationResult():
                self._record_probation(row, new, command)

    async def _activate(self, row: records.InstallRow, new: Job, handover: Handover | None) -> None:
        key = row.plugin_key
        previous = next((r for r in records.installs_of(self.db, key) if r.active), None)
        await records.activate_install(self.db, key, row.id)
        if previous is not None and previous.id != row.id:
            superseded = msgspec.structs.replace(
                job_of(previous),
                stage=Stage.DISABLED,
                reason=f"superseded by {row.version}",
                running="",
            )
            await records.save_install(self.db, previous.id, msgspec.to_builtins(superseded))
            if handover is not None:
                await handover.commit(f"handed over to {row.version}")
                self.spawn(self._finish_handover, handover, previous, row, new.stage, key=key)
                return
            await self.workers.remove(key, f"upgraded to {row.version}")
            await trio.to_thread.run_sync(installer.remove, self.layout.tree(key, previous.id))
            records.record_event(
                self.db,
                key,
                "upgraded",
                state=Stage.VERIFIED.value,
                reason=f"{previous.version} -> {row.version}",
            )
            return
        actor = self.workers.supervisor.directory.get(key)
        if actor is not None and actor.phase is Phase.QUARANTINED:
            actor.release()

    # --- hand over (upgrades of a running plugin) ---------------------------------------------

    def _taken_over(
        self, row: records.InstallRow, job: Job, new: Job, commands: list[Command]
    ) -> records.InstallRow | None:
        """The active install whose running worker this step's activation must take over
        from: a step's success (so its failure can be stepped instead) that activates `row`
        enabled while another version of the plugin has a worker that serves or will."""
        if not job.running or new.stage is not Stage.ENABLED:
            return None
        if not any(isinstance(c, Activate) for c in commands):
            return None
        key = row.plugin_key
        previous = next((r for r in records.installs_of(self.db, key) if r.active), None)
        if previous is None or previous.id == row.id:
            return None
        actor = self.workers.supervisor.directory.get(key)
        if actor is None or actor.phase in NOT_SERVING:
            return None
        return previous

    def _handover_failed(
        self, row: records.InstallRow, previous: records.InstallRow, failed: StartFailed
    ) -> str:
        """Record why the new version's worker did not start; the reason its upgrade fails."""
        reason = (
            f"the worker of {row.version} did not start: {failed.reason}; "
            f"{previous.version} serves on"
        )
        records.record_event(
            self.db,
            row.plugin_key,
            "handover_failed",
            state=Stage.REJECTED.value,
            reason=reason,
            detail={
                "install": row.id,
                "from": previous.version,
                "to": row.version,
                "evidence": msgspec.to_builtins(failed.evidence),
            },
        )
        return reason

    async def _finish_handover(
        self,
        handover: Handover,
        previous: records.InstallRow,
        row: records.InstallRow,
        stage: Stage,
    ) -> None:
        """Once the old worker drained and stopped: delete its tree, record the upgrade."""
        key = row.plugin_key
        c = self.config.supervisor
        report: DrainReport | None = None
        with trio.move_on_after(c.drain_timeout_s + c.stop_timeout_s * 2 + 5):
            report = await handover.drained()
        await trio.to_thread.run_sync(installer.remove, self.layout.tree(key, previous.id))
        if records.get_plugin(self.db, key) is None:
            return  # uninstalled meanwhile: nothing to record it on
        records.record_event(
            self.db,
            key,
            "upgraded",
            state=stage.value,
            reason=f"{previous.version} -> {row.version}",
            detail={
                "install": row.id,
                "from": previous.version,
                "to": row.version,
                "drained": msgspec.to_builtins(report) if report is not None else None,
            },
        )

    async def _run_step(self, install_id: str, name: str, scope: trio.CancelScope) -> None:
        event: Event
        try:
            with scope:
                try:
                    row = records.get_install(self.db, install_id)
                    if row is None:
                        return
                    event = await self.steps.run(name, row)
                except InstallError as exc:
                    event = StepFailed(str(exc))
                except Exception as exc:
                    log.exception("install %s: step %s failed", install_id, name)
                    event = StepFailed(f"internal error during {name}: {type(exc).__name__}: {exc}")
            if not scope.cancel_called:
                await self.drive_logged(install_id, event, step_scope=scope)
        finally:
            if self._running.get(install_id) is scope:
                del self._running[install_id]

    def forget(self, rows: list[records.InstallRow]) -> None:
        """An uninstall: cancel the steps and probation timers of these jobs."""
        for row in rows:
            running = self._running.pop(row.id, None)
            if running is not None:
                running.cancel()
            timer = self._timers.pop(row.id, None)
            if timer is not None:
                timer[1].cancel()

    # --- probation -------------------------------------------------------------------------

    def _arm(self, install_id: str, key: str, job: Job, why: str = "") -> None:
        """Keep exactly one timer per pending probation, at the job's `probation_due_at`."""
        due = job.probation_due_at if job.stage is Stage.QUARANTINED else None
        current = self._timers.get(install_id)
        if current is not None and current[0] == due:
            return
        if current is not None:
            current[1].cancel()
            del self._timers[install_id]
        if due is None:
            return
        scope = trio.CancelScope()
        self._timers[install_id] = (due, scope)
        self.spawn(self._probation_timer, install_id, due, scope, key, key=key)
        attempt = job.probation_attempts + 1
        records.record_event(
            self.db,
            key,
            "probation_scheduled",
            state=job.stage.value,
            reason=why
            or f"probation attempt {attempt} of {self.config.supervisor.probation_attempts}"
            " scheduled: the full test suite re-runs then",
            next_retry_at=due,
            detail={"install": install_id, "attempt": attempt},
        )

    async def _probation_timer(
        self, install_id: str, due: float, scope: trio.CancelScope, key: str
    ) -> None:
        with scope:
            await trio.sleep(max(0.0, due - time.time()))
        if self._timers.get(install_id) == (due, scope):
            del self._timers[install_id]
        if scope.cancelled_caught:
            return
        try:
            row = records.get_install(self.db, install_id)
            if row is None:
                return
            attempt = job_of(row).probation_attempts + 1
        except Exception as exc:
            self.record_error(key, f"probation attempt of install {install_id}", exc)
            return
        c = self.config.supervisor
        retry_at = time.time() + c.probation_s if attempt < c.probation_attempts else None
        await self.drive_logged(install_id, ProbationDue(retry_at))

    def _record_probation(self, row: records.InstallRow, new: Job, result: ProbationResult) -> None:
        passed = result.passed
        detail: dict[str, Any] = {
            "install": row.id,
            "version": row.version,
            "attempt": result.attempt,
            "attempts_allowed": self.config.supervisor.probation_attempts,
            "run_id": row.last_run_id,
            "result": "passed" if passed else "failed",
            "next_attempt_at": result.retry_at,
        }
        if passed:
            reason = f"probation attempt {result.attempt} passed: released"
        elif result.retry_at is not None:
            reason = f"probation attempt {result.attempt} failed; another is scheduled"
        else:
            reason = (
                f"probation attempt {result.attempt} failed; no attempts left: "
                "stays QUARANTINED until an operator releases it"
            )
        records.record_event(
            self.db,
            row.plugin_key,
            "probation_attempt",
            state=new.stage.value,
            reason=reason,
            next_retry_at=result.retry_at,
            detail=detail,
        )
        records.audit(
            self.db, "probation", "plugin.probation_attempt", plugin=row.plugin_key, detail=detail
        )

    # --- records and recovery --------------------------------------------------------------

    async def sync_plugin_row(self, key: str) -> None:
        """The plugin record shows the active install, or the latest while none is active."""
        rows = records.installs_of(self.db, key)
        if not rows:
            return
        shown = shown_install(rows)
        job = job_of(shown)
        tree = str(self.layout.tree(key, shown.id)) if shown.active else ""
        await records.upsert_plugin(
            self.db,
            key,
            name=shown.manifest.name,
            version=shown.version,
            state=job.stage.value,
            reason=job.reason,
            source_dir=tree,
            manifest=shown.manifest,
        )

    async def recover(self) -> None:
        """After a start: fail interrupted test runs, resume unfinished jobs, start what is on,
        re-arm pending probations."""
        interrupted = await records.mark_interrupted_test_runs(self.db)
        if interrupted:
            log.warning("marked %d interrupted test runs as failed", interrupted)
        for row in records.all_installs(self.db):
            job = job_of(row)
            if job.running or job.stage in (Stage.UPLOADED, Stage.ENABLED):
                if job.stage is Stage.ENABLED and not row.active:
                    continue
                log.info("resuming %s %s (%s)", row.plugin_key, row.version, job.stage.value)
                await self.drive(row.id, Resume())
            elif job.stage is Stage.QUARANTINED and job.probation_due_at is not None:
                self._arm(row.id, row.plugin_key, job, "probation rescheduled after a restart")
        await trio.to_thread.run_sync(self._remove_orphans)

    def _remove_orphans(self) -> None:
        rows = records.all_installs(self.db)
        staged = {r.id for r in rows if job_of(r).running in ("install", "test", "promote")}
        staging_root = self.layout.data_dir / "staging"
        if staging_root.is_dir():
            for path in staging_root.iterdir():
                if path.name not in staged:
                    installer.remove(path)
        # a tree belongs to the active install or to one whose step is under way; any other
        # (an old version whose hand over a stop interrupted) is left over
        trees = {(r.plugin_key, r.id) for r in rows if r.active or job_of(r).running}
        plugins_root = self.layout.data_dir / "plugins"
        if plugins_root.is_dir():
            for key_dir in plugins_root.iterdir():
                for tree in key_dir.iterdir():
                    if (key_dir.name, tree.name) not in trees:
                        installer.remove(tree)
