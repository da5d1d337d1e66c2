"""The supervisor: one actor per plugin, each in its own task, wired to store and tokens.

Each actor runs under the supervisor's nursery; an actor's failure is contained to its own
plugin (logged and marked), never propagated to other plugins or the gateway.
"""

from __future__ import annotations

import logging
from typing import Any

import trio

from ..config import SupervisorConfig
from ..errors import NotFound
from ..ipc.messages import CoreCall
from ..lanes.core import CoreApi
from ..security.tokens import PluginTokens
from ..store import records
from ..store.db import Database
from .actor import Hooks, WorkerActor
from .policy import Phase
from .process import WorkerSpec

log = logging.getLogger(__name__)

TERMINAL = (Phase.IDLE, Phase.STOPPED, Phase.QUARANTINED)


def _leaf(exc: BaseException) -> str:
    """The first real exception inside nested exception groups, as `Type: message`."""
    while isinstance(exc, BaseExceptionGroup) and exc.exceptions:
        exc = exc.exceptions[0]
    return f"{type(exc).__name__}: {exc}"


class Supervisor:
    def __init__(self, config: SupervisorConfig, db: Database, tokens: PluginTokens) -> None:
        self.config = config
        self.db = db
        self.tokens = tokens
        self.core_api = CoreApi(db, tokens)
        self.actors: dict[str, WorkerActor] = {}
        self._nursery: trio.Nursery | None = None

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            task_status.started()
            await trio.sleep_forever()

    def get(self, key: str) -> WorkerActor:
        actor = self.actors.get(key)
        if actor is None:
            raise NotFound(f"plugin {key!r} is not running", {"plugin": key})
        return actor

    async def add(self, spec: WorkerSpec, scopes: list[str]) -> WorkerActor:
        """Create the plugin's actor (not yet started)."""
        assert self._nursery is not None, "supervisor is not running"
        if spec.key in self.actors:
            raise ValueError(f"plugin {spec.key!r} already has an actor")
        actor = WorkerActor(spec, self.config, self._hooks(spec.key, scopes), scopes)
        self.actors[spec.key] = actor
        await self._nursery.start(self._run_actor, actor)
        return actor

    async def _run_actor(
        self, actor: WorkerActor, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
    ) -> None:
        try:
            await actor.run(task_status=task_status)
        except Exception as exc:
            log.exception("actor of plugin %s failed", actor.key)
            actor.fail(f"internal actor error: {_leaf(exc)}")

    async def stop_all(self, grace_s: float) -> None:
        """Graceful stop of every worker, bounded by `grace_s`; the caller cancels the rest."""
        for actor in self.actors.values():
            actor.stop("server shutting down")
        with trio.move_on_after(grace_s):
            async with trio.open_nursery() as nursery:
                for actor in self.actors.values():
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
                records.set_plugin_state(db, key, "QUARANTINED", reason)
                records.audit(db, "supervisor", "plugin.quarantined", plugin=key, detail=fields)

        return Hooks(
            issue_token=issue_token,
            revoke_tokens=lambda: tokens.revoke(key),
            properties=properties,
            handle_core_call=handle_core_call,
            record=record,
        )
