"""The supervisor: one actor per plugin, each in its own task, wired to store and tokens.

Each actor runs under the supervisor's nursery; an actor's failure is contained to its own
plugin (logged and quarantined as `internal_error`), never propagated to other plugins or the
gateway; starting the plugin again (`replace`) gives it a new actor. What actors report
(typed events, see events.py) is stored here — lifecycle events, health checks, audit rows —
and then handed to the observers (the install service, which is the one writer of a plugin's
state).
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
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
from .directory import Directory
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
from .policy import Phase
from .process import WorkerSpec

log = logging.getLogger(__name__)

TERMINAL = (Phase.IDLE, Phase.STOPPED, Phase.QUARANTINED)


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
        self._scopes: dict[str, trio.CancelScope] = {}
        self._nursery: trio.Nursery | None = None

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            task_status.started()
            await trio.sleep_forever()

    async def add(self, spec: WorkerSpec, manifest: Manifest) -> WorkerActor:
        """Create the plugin's actor (not yet started); its scopes, events, hooks and health
        check come from its manifest."""
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
        self.directory.add(actor)
        self._scopes[spec.key] = await self._nursery.start(self._run_actor, actor)
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
        """Stop the plugin's worker gracefully and drop its actor."""
        actor = self.directory.get(key)
        if actor is None:
            return
        actor.stop(reason)
        with trio.move_on_after(self.config.stop_timeout_s * 2 + 1):
            await actor.wait_for(*TERMINAL)
        self._scopes.pop(key).cancel()
        self.directory.remove(key)
        if self.egress is not None:
            await self.egress.close(key)

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
        """Graceful stop of every worker, bounded by `grace_s`; the caller cancels the rest."""
        for actor in self.directory:
            actor.stop(reason)
        with trio.move_on_after(grace_s):
            async with trio.open_nursery() as nursery:
                for actor in self.directory:
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

    def _hooks(self, key: str, scopes: list[str]) -> Hooks:
        db, tokens, ttl = self.db, self.tokens, self.config.token_ttl_s

        def issue_token(properties: list[str]) -> tuple[str, float]:
            return tokens.issue(key, scopes, properties, ttl)

        async def handle_core_call(call: CoreCall) -> Any:
            return await self.core.handle(key, call)

        return Hooks(
            issue_token=issue_token,
            revoke_tokens=lambda: tokens.revoke(key),
            properties=lambda: records.assigned_properties(db, key),
            handle_core_call=handle_core_call,
            emit=self._record,
            config=lambda: records.get_config(db, key),
        )

    def _record(self, event: ActorEvent) -> None:
        """Store what an actor reported, then tell the observers."""
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
        try:
            self.observers(event)
        except Exception:
            log.exception("an observer of plugin %s failed on %s", key, type(event).__name__)
