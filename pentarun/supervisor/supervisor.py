"""The supervisor: one routed actor per plugin, each in its own task, wired to store and tokens.

Each actor runs under the supervisor's nursery; an actor's failure is contained to its own
plugin (logged and quarantined as `internal_error`), never propagated to other plugins or the
gateway; starting the plugin again (`replace`) gives it a new actor. What actors report
(typed events, see events.py) is stored here — lifecycle events, health checks, audit rows —
and then handed to the observers (the install service, which is the one writer of a plugin's
state).

Hand over (handover.py), for upgrades and live reloads: `succeed(spec, manifest)` starts the
new version's actor beside the routed one and waits (bounded) for its first worker's
handshake — a `Succession`, or `StartFailed` with nothing left behind; `promote(succession)`
routes every new call to it and drains the old actor in the background (its calls and
streams get `drain_timeout_s`, then it stops gracefully; `Succession.drained()` reports);
`abandon(succession)` stops a successor that is not wanted after all. Only the routed actor's
events reach the observers and the plugin's health and lifecycle records: a successor's or a
draining actor's are stored as `handover` events (a failing successor must never quarantine
the plugin its predecessor still serves); its promotion is the routed state change observers
hear (`state_changed`, "<version> took over from <version>"). The egress socket of a key is
shared by its actors: it closes when the last actor that needs it is gone.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from functools import partial
from pathlib import Path
from typing import Any, Protocol

import msgspec
import trio

from ..config import SupervisorConfig
from ..errors import leaf
from ..ipc.env import SANDBOX_EGRESS_SOCKET
from ..ipc.messages import CoreCall
from ..packages import integrity
from ..packages.integrity import StartCheck
from ..packages.manifest import Manifest
from ..sandbox.launcher import Sandbox
from ..sandbox.profile import Bind
from ..security.tokens import PluginTokens
from ..store import records
from ..store.db import Database
from .actor import Hooks, WorkerActor
from .directory import Directory, Role
from .events import (
    ActorEvent,
    CallRefused,
    EventsDropped,
    HealthChecked,
    Observers,
    Quarantined,
    Spawned,
    StateChanged,
)
from .handover import DrainReport, Load, Started, StartFailed, Starting, drain_report
from .policy import Phase
from .process import WorkerSpec

log = logging.getLogger(__name__)

TERMINAL = (Phase.IDLE, Phase.STOPPED, Phase.QUARANTINED)
START_MARGIN_S = 5.0  # beyond startup_timeout_s, a successor's start is given up on regardless


class EgressPort(Protocol):
    """The egress lane (pentarun.lanes.egress.EgressLane) as the supervisor opens it."""

    async def open(self, key: str, manifest: Manifest) -> None: ...

    async def close(self, key: str) -> None: ...

    def socket_path(self, key: str) -> Path: ...

    def egress_environment(self, key: str, *, sandboxed: bool = True) -> dict[str, str]: ...


class CoreCalls(Protocol):
    """The core's side of `ctx.core.call` (pentarun.lanes.core.CoreApi)."""

    async def handle(self, plugin_key: str, call: CoreCall) -> Any: ...


class _Reporting:
    """Adapts an actor's `started()` to report the cancel scope that owns it."""

    def __init__(self, status: trio.TaskStatus[trio.CancelScope], scope: trio.CancelScope) -> None:
        self._status, self._scope = status, scope

    def started(self, value: None = None) -> None:
        self._status.started(self._scope)


class Succession:
    """A hand over under way: `successor` started beside `predecessor` (the routed actor when
    it began, or None). After `promote`, `drained()` waits for the old actor's drain."""

    def __init__(self, successor: WorkerActor, predecessor: WorkerActor | None) -> None:
        self.successor = successor
        self.predecessor = predecessor
        self.report: DrainReport | None = None
        self.done = trio.Event()

    async def drained(self) -> DrainReport:
        """The drain's report once the old actor is gone (the caller bounds the wait)."""
        await self.done.wait()
        assert self.report is not None
        return self.report

    def _finish(self, report: DrainReport) -> None:
        self.report = report
        self.done.set()


class Supervisor:
    def __init__(
        self,
        config: SupervisorConfig,
        db: Database,
        tokens: PluginTokens,
        core: CoreCalls,
        *,
        directory: Directory | None = None,
        observers: Observers | None = None,
        sandbox: Sandbox | None = None,
        start_check: StartCheck | None = None,
        egress: EgressPort | None = None,
    ) -> None:
        """`core` answers workers' core calls; `directory` is shared with the lanes that look
        workers up; `observers` hear every actor event (pentarun.assembly wires them);
        `sandbox` starts every worker (None: unsandboxed, `security.sandbox = "off"`)."""
        self.sandbox = sandbox
        self.start_check = start_check  # the install tree re-hashed before every start
        self.egress = egress  # a plugin with proxy:egress gets its proxy socket
        self.config = config
        self.db = db
        self.tokens = tokens
        self.core = core
        self.directory = directory if directory is not None else Directory()
        self.observers = observers if observers is not None else Observers()
        self._scopes: dict[WorkerActor, trio.CancelScope] = {}
        self._nursery: trio.Nursery | None = None

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            task_status.started()
            await trio.sleep_forever()

    async def add(self, spec: WorkerSpec, manifest: Manifest) -> WorkerActor:
        """Create the plugin's actor (not yet started); its scopes, events, hooks and health
        check come from its manifest."""
        return await self._create(spec, manifest, Role.ROUTED)

    async def _create(self, spec: WorkerSpec, manifest: Manifest, role: Role) -> WorkerActor:
        assert self._nursery is not None, "supervisor is not running"
        hooks = self._hooks(spec.key, list(manifest.scopes))
        hooks.check_tree = self._tree_check(spec.key)
        if self.egress is not None and "proxy:egress" in manifest.scopes:
            await self.egress.open(spec.key, manifest)
            sandboxed = self.sandbox is not None
            hooks.extra_env = self.egress.egress_environment(spec.key, sandboxed=sandboxed)
            if sandboxed:
                socket = str(self.egress.socket_path(spec.key))
                hooks.extra_binds = (Bind(socket, SANDBOX_EGRESS_SOCKET),)
        actor = WorkerActor(spec, self.config, hooks, manifest, self.sandbox)
        hooks.emit = partial(self._record_of, actor)
        if role is Role.SUCCESSOR:
            self.directory.add_successor(actor)
        else:
            self.directory.add(actor)
        self._scopes[actor] = await self._nursery.start(self._run_actor, actor)
        return actor

    async def replace(self, spec: WorkerSpec, manifest: Manifest) -> WorkerActor:
        """The plugin's actor for this spec: kept if it already runs this tree, else new."""
        current = self.directory.get(spec.key)
        if (
            current is not None
            and not current.failed
            and current.spec == spec
            and current.manifest == manifest
        ):
            return current
        await self.remove(spec.key)
        return await self.add(spec, manifest)

    async def remove(self, key: str, reason: str = "plugin replaced") -> None:
        """Stop the plugin's workers gracefully and drop their actors (a successor starting
        and actors draining too)."""
        actors = self.directory.actors_of(key)
        if not actors:
            return
        async with trio.open_nursery() as nursery:
            for actor in actors:
                nursery.start_soon(self._retire, actor, reason)

    async def _retire(self, actor: WorkerActor, reason: str, *, graceful: bool = True) -> None:
        """Stop `actor` (gracefully, bounded; else its worker is killed at once), end its task,
        forget it, and close the plugin's egress socket unless another of its actors still
        needs it. Idempotent."""
        actor.stop(reason)
        if not graceful:
            actor.kill()
        with trio.move_on_after(self.config.stop_timeout_s * 2 + 1):
            await actor.wait_for(*TERMINAL)
        scope = self._scopes.pop(actor, None)
        if scope is not None:
            scope.cancel()
        self.directory.drop(actor)
        await self._egress_follows(actor.key)

    async def _egress_follows(self, key: str) -> None:
        """The key's egress proxy serves the routed actor's manifest while any actor of the key
        needs it, and closes when none does."""
        if self.egress is None:
            return
        left = [a for a in self.directory.actors_of(key) if "proxy:egress" in a.manifest.scopes]
        if not left:
            await self.egress.close(key)
        else:
            await self.egress.open(key, left[0].manifest)

    # --- hand over (handover.py) -----------------------------------------------------------

    async def succeed(self, spec: WorkerSpec, manifest: Manifest) -> Succession | StartFailed:
        """Start `spec` beside the plugin's routed actor and wait for its first worker's
        handshake, at most `startup_timeout_s` (+ a margin). Started: a Succession (not yet
        routed: `promote` or `abandon` it). Failed: StartFailed, the successor gone."""
        predecessor = self.directory.get(spec.key)
        successor = await self._create(spec, manifest, Role.SUCCESSOR)
        outcome: Started | StartFailed = StartFailed(
            f"no handshake within {self.config.startup_timeout_s + START_MARGIN_S:g} s"
        )
        try:
            successor.start()
            with trio.move_on_after(self.config.startup_timeout_s + START_MARGIN_S):
                started = await successor.started()
                assert not isinstance(started, Starting)
                outcome = started
        except BaseException:
            with trio.CancelScope(shield=True):
                await self._retire(successor, "hand over cancelled", graceful=False)
            raise
        if isinstance(outcome, StartFailed):
            await self._retire(successor, f"did not start: {outcome.reason}", graceful=False)
            if not outcome.evidence.last_exit:
                outcome = StartFailed(outcome.reason, successor.evidence())
            return outcome
        return Succession(successor, predecessor)

    def promote(self, succession: Succession, reason: str = "handed over") -> None:
        """Every new call and stream goes to the successor from now on; the actor it replaces
        drains in the background and stops (`succession.drained()` reports)."""
        assert self._nursery is not None, "supervisor is not running"
        successor = succession.successor
        previous = self.directory.promote(successor)
        # the plugin's worker is now this one: its state is the plugin's, observers hear it
        took_over = f" from {previous.manifest.version}" if previous is not None else ""
        self._record(
            StateChanged(
                successor.key,
                successor.phase.value,
                f"{successor.manifest.version} took over{took_over}",
                restarts=successor.state.restarts,
            )
        )
        if previous is None:
            succession._finish(DrainReport())
            return
        at_handover = previous.load()
        previous.hand_to(successor)
        self._nursery.start_soon(self._drain, previous, at_handover, succession, reason)

    async def abandon(self, succession: Succession, reason: str) -> None:
        """Stop a successor that was not promoted; the routed actor serves on."""
        with trio.CancelScope(shield=True):
            await self._retire(succession.successor, reason)

    async def _drain(
        self, actor: WorkerActor, at_handover: Load, succession: Succession, reason: str
    ) -> None:
        """Let `actor`'s calls and streams finish (at most `drain_timeout_s`), then retire it;
        the report is given when it is gone (or when the drain is cancelled)."""
        began = trio.current_time()
        at_end: Load | None = None
        waited, timed_out = 0.0, True  # a drain cancelled before its end counts as cut
        try:
            with trio.move_on_after(self.config.drain_timeout_s):
                await actor.wait_idle()
                timed_out = False
            waited, at_end = trio.current_time() - began, actor.load()
            if timed_out:
                log.warning(
                    "plugin %s: the drain timed out with %d calls and %d streams open",
                    actor.key,
                    at_end.calls,
                    at_end.streams,
                )
            await self._retire(actor, reason)
        finally:
            if at_end is None:
                waited, at_end = trio.current_time() - began, actor.load()
            succession._finish(drain_report(at_handover, at_end, waited, timed_out))

    async def _run_actor(
        self,
        actor: WorkerActor,
        *,
        task_status: trio.TaskStatus[trio.CancelScope] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        with trio.CancelScope() as scope:
            try:
                await actor.run(task_status=_Reporting(task_status, scope))
            except Exception as exc:
                log.exception("actor of plugin %s failed", actor.key)
                actor.fail(f"internal actor error: {leaf(exc)}")

    async def stop_all(self, grace_s: float, reason: str = "server shutting down") -> None:
        """Graceful stop of every worker (successors and draining ones too), bounded by
        `grace_s`; the caller cancels the rest."""
        actors = self.directory.everyone()
        for actor in actors:
            actor.stop(reason)
        with trio.move_on_after(grace_s):
            async with trio.open_nursery() as nursery:
                for actor in actors:
                    nursery.start_soon(actor.wait_for, *TERMINAL)

    def _tree_check(self, key: str) -> Callable[[Path], Awaitable[str]] | None:
        """Before every start of `key`: "" when its tree may run, else why (recorded)."""
        check = self.start_check
        if check is None:
            return None

        async def check_tree(tree: Path) -> str:
            problems = await check(key, tree)
            if not problems:
                return ""
            return integrity.record_failure(self.db, key, tree.name, "a start", problems)

        return check_tree

    def _revoker(self, key: str) -> Callable[[WorkerActor], None]:
        def revoke(actor: WorkerActor) -> None:
            if self.directory.role(actor) is Role.ROUTED:  # the one serving the plugin
                self.tokens.revoke(key)

        return revoke

    def _hooks(self, key: str, scopes: list[str]) -> Hooks:
        db, tokens, ttl = self.db, self.tokens, self.config.token_ttl_s

        def issue_token(properties: list[str]) -> tuple[str, float]:
            return tokens.issue(key, scopes, properties, ttl)

        async def handle_core_call(call: CoreCall) -> Any:
            return await self.core.handle(key, call)

        return Hooks(
            issue_token=issue_token,
            revoke_tokens=self._revoker(key),
            properties=lambda: records.assigned_properties(db, key),
            handle_core_call=handle_core_call,
            emit=self._record,
            config=lambda: records.get_config(db, key),
        )

    def _record_of(self, actor: WorkerActor, event: ActorEvent) -> None:
        """What `actor` reported: the routed actor's is the plugin's own; any other's is kept
        aside (a `handover` event) and told to no observer."""
        role = self.directory.role(actor)
        if role is Role.ROUTED:
            self._record(event)
            return
        what = role.value if role is not None else "retired"
        version = actor.manifest.version
        aside: dict[str, Any] = {"role": what, "version": version}
        db, key = self.db, event.key
        match event:
            case StateChanged():
                records.record_event(
                    db,
                    key,
                    "handover",
                    state=event.state,
                    reason=f"{what} {version}: {event.reason}",
                    next_retry_at=event.next_retry_at,
                    detail={**aside, "restarts": event.restarts},
                )
            case Spawned():
                records.record_event(
                    db,
                    key,
                    "handover",
                    reason=f"{what} {version}: spawned pid {event.pid}",
                    detail={**aside, "pid": event.pid, "generation": event.generation},
                )
            case Quarantined():
                records.record_event(
                    db,
                    key,
                    "handover",
                    state=Phase.QUARANTINED.value,
                    reason=f"{what} {version}: {event.rule}: {event.reason}",
                    detail={
                        **aside,
                        "rule": event.rule,
                        "evidence": msgspec.to_builtins(event.evidence),
                    },
                )
            case HealthChecked():
                pass  # the plugin's health is its routed worker's
            case _:
                self._store(event)

    def _record(self, event: ActorEvent) -> None:
        """Store what the routed actor reported, then tell the observers."""
        self._store(event)
        try:
            self.observers(event)
        except Exception:
            log.exception("an observer of plugin %s failed on %s", event.key, type(event).__name__)

    def _store(self, event: ActorEvent) -> None:
        db, key = self.db, event.key
        match event:
            case HealthChecked(result=result):
                detail = msgspec.to_builtins(result)
                records.record_health(db, key, result.ok, result.latency_ms, detail)
            case StateChanged():
                records.record_event(
                    db,
                    key,
                    "state_changed",
                    state=event.state,
                    reason=event.reason,
                    next_retry_at=event.next_retry_at,
                    detail={"restarts": event.restarts},
                )
            case Spawned():
                detail = {"pid": event.pid, "generation": event.generation}
                records.record_event(
                    db, key, "spawned", detail={**detail, "restarts": event.restarts}
                )
            case Quarantined():
                detail = {
                    "rule": event.rule,
                    "reason": event.reason,
                    "evidence": msgspec.to_builtins(event.evidence),
                    "probation": event.probation,
                }
                records.record_event(
                    db, key, "quarantined", state=Phase.QUARANTINED.value, reason=event.reason,
                    detail=detail,
                )  # fmt: skip
                records.audit(db, "supervisor", "plugin.quarantined", plugin=key, detail=detail)
            case EventsDropped():
                reason = f"{event.dropped} events dropped: {event.backlog} unacknowledged"
                records.record_event(db, key, "events_dropped", reason=reason)
            case CallRefused():
                records.audit(
                    db,
                    f"plugin:{key}" if event.what == "core_call" else "gateway",
                    f"{event.what}.refused",
                    plugin=key,
                    property_id=event.property,
                    detail={"name": event.name, "code": event.code, "message": event.message},
                )
