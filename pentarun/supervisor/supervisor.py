"""The supervisor: one actor per plugin, each in its own task, wired to store and tokens.

Each actor runs under the supervisor's nursery; an actor's failure is contained to its own
plugin (logged and marked), never propagated to other plugins or the gateway.
"""

from __future__ import annotations

import logging
import secrets
from collections.abc import Callable
from typing import Any

import trio

from ..config import SupervisorConfig
from ..ipc.messages import CoreCall
from ..lanes.core import CoreApi
from ..lanes.events import EventLane
from ..lanes.hooks import HookLane
from ..security.stream_tokens import StreamTokens
from ..security.tokens import PluginTokens
from ..store import records
from ..store.db import Database
from .actor import Hooks, WorkerActor
from .directory import Directory
from .policy import Phase
from .process import WorkerSpec

log = logging.getLogger(__name__)

TERMINAL = (Phase.IDLE, Phase.STOPPED, Phase.QUARANTINED)


def _leaf(exc: BaseException) -> str:
    """The first real exception inside nested exception groups, as `Type: message`."""
    while isinstance(exc, BaseExceptionGroup) and exc.exceptions:
        exc = exc.exceptions[0]
    return f"{type(exc).__name__}: {exc}"


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
        streams: StreamTokens | None = None,
    ) -> None:
        self.config = config
        self.db = db
        self.tokens = tokens
        self.core_api = CoreApi(db, tokens, streams or StreamTokens(secrets.token_bytes(32)))
        self.events = EventLane(self)
        self.hooks = HookLane(db, self)
        self.core_api.hook_runner = self.hooks.run
        self.core_api.register("events.publish", "events:publish", self.events.core_publish)
        self.directory = Directory()
        self._scopes: dict[str, trio.CancelScope] = {}
        self._nursery: trio.Nursery | None = None
        # told when the policy quarantines a plugin: (key, rule, reason)
        self.on_quarantine: Callable[[str, str, str], None] = self._mark_quarantined

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            task_status.started()
            await trio.sleep_forever()

    def _mark_quarantined(self, key: str, rule: str, reason: str) -> None:
        records.set_plugin_state(self.db, key, "QUARANTINED", reason)

    async def add(self, spec: WorkerSpec, manifest: dict[str, Any]) -> WorkerActor:
        """Create the plugin's actor (not yet started); its scopes, events and hooks come from
        `manifest` (definition.json as a dict)."""
        assert self._nursery is not None, "supervisor is not running"
        scopes = list(manifest.get("scopes", []))
        actor = WorkerActor(spec, self.config, self._hooks(spec.key, scopes), manifest)
        self.directory.add(actor)
        self._scopes[spec.key] = await self._nursery.start(self._run_actor, actor)
        return actor

    async def replace(self, spec: WorkerSpec, manifest: dict[str, Any]) -> WorkerActor:
        """The plugin's actor for this spec: kept if it already runs this tree, else new."""
        current = self.directory.get(spec.key)
        if current is not None and current.spec == spec and current.manifest == manifest:
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
                actor.fail(f"internal actor error: {_leaf(exc)}")

    async def stop_all(self, grace_s: float, reason: str = "server shutting down") -> None:
        """Graceful stop of every worker, bounded by `grace_s`; the caller cancels the rest."""
        for actor in self.directory:
            actor.stop(reason)
        with trio.move_on_after(grace_s):
            async with trio.open_nursery() as nursery:
                for actor in self.directory:
                    nursery.start_soon(actor.wait_for, *TERMINAL)

    def _hooks(self, key: str, scopes: list[str]) -> Hooks:
        db, tokens, ttl = self.db, self.tokens, self.config.token_ttl_s

        def issue_token(properties: list[str]) -> tuple[str, float]:
            return tokens.issue(key, scopes, properties, ttl)

        def properties() -> list[str]:
            return records.assigned_properties(db, key)

        async def handle_core_call(call: CoreCall) -> Any:
            return await self.core_api.handle(key, call)

        def record(kind: str, fields: dict[str, Any]) -> None:
            if kind == "health":
                records.record_health(
                    db, key, bool(fields.get("ok")), fields.get("latency_ms"), fields
                )
                return
            state = str(fields.get("state", ""))
            reason = str(fields.get("reason", ""))
            records.record_event(
                db,
                key,
                kind,
                state=state,
                reason=reason,
                next_retry_at=fields.get("next_retry_at"),
                detail=fields,
            )
            if kind == "quarantined":
                records.audit(db, "supervisor", "plugin.quarantined", plugin=key, detail=fields)
                self.on_quarantine(key, str(fields.get("rule", "")), reason)

        return Hooks(
            issue_token=issue_token,
            revoke_tokens=lambda: tokens.revoke(key),
            properties=properties,
            handle_core_call=handle_core_call,
            record=record,
            config=lambda: records.get_config(db, key),
        )
