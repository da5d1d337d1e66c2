"""The plugins this server knows: their records, their actors, their property assignments.

Installing from packages arrives with the install pipeline; until then a plugin can run
straight from a source directory (`pentarun serve --plugin-dir DIR`).
"""

from __future__ import annotations

import json
import re
import time
from pathlib import Path
from typing import Any

import msgspec
import trio

from .errors import BadRequest, NotFound
from .store import records
from .store.db import Database
from .supervisor.actor import WorkerActor
from .supervisor.process import WorkerSpec
from .supervisor.supervisor import Supervisor

KEY_PATTERN = re.compile(r"^[a-z][a-z0-9-]{1,62}$")


class SourceDefinition(msgspec.Struct):
    """The part of definition.json needed to run a plugin from source."""

    key: str
    version: str
    name: str = ""
    scopes: list[str] = []
    resources: dict[str, float] = {}


def read_source_definition(root: Path) -> tuple[Path, SourceDefinition, dict[str, Any]]:
    """Read and check a plugin source tree; returns its absolute path and definition."""
    root = root.resolve()
    path = root / "definition.json"
    try:
        raw = json.loads(path.read_text())
        definition = msgspec.convert(raw, SourceDefinition)
    except (OSError, ValueError, msgspec.ValidationError) as exc:
        raise BadRequest(f"cannot read {path}: {exc}") from exc
    if not KEY_PATTERN.match(definition.key):
        raise BadRequest(f"{path}: key {definition.key!r} does not match {KEY_PATTERN.pattern}")
    if not (root / "worker" / "plugin_worker.py").is_file():
        raise BadRequest(f"{root}: worker/plugin_worker.py is missing")
    return root, definition, raw


class Registry:
    def __init__(self, db: Database, supervisor: Supervisor) -> None:
        self.db = db
        self.supervisor = supervisor

    async def run_from_source(self, root: Path) -> WorkerActor:
        root, definition, manifest = await trio.to_thread.run_sync(read_source_definition, root)
        await records.upsert_plugin(
            self.db,
            definition.key,
            name=definition.name or definition.key,
            version=definition.version,
            state="ENABLED",
            reason="running from source",
            source_dir=str(root),
            manifest=manifest,
        )
        limit = definition.resources.get("memory_limit")
        spec = WorkerSpec(definition.key, root, memory_limit_mb=int(limit) if limit else None)
        actor = await self.supervisor.add(spec, manifest)
        actor.start()
        return actor

    def plugin(self, key: str) -> records.PluginRow:
        row = records.get_plugin(self.db, key)
        if row is None:
            raise NotFound(f"no plugin {key!r}", {"plugin": key})
        return row

    async def assign(self, key: str, property_id: str) -> None:
        self.plugin(key)
        if records.get_property(self.db, property_id) is None:
            raise NotFound(f"no property {property_id!r}", {"property": property_id})
        await records.assign_property(self.db, key, property_id)
        self._refresh(key)

    async def unassign(self, key: str, property_id: str) -> None:
        self.plugin(key)
        if not await records.unassign_property(self.db, key, property_id):
            raise NotFound(f"plugin {key!r} is not assigned to {property_id!r}")
        self._refresh(key)

    def _refresh(self, key: str) -> None:
        actor = self.supervisor.directory.get(key)
        if actor is not None:
            actor.refresh_token()

    def summary(self, row: records.PluginRow) -> dict[str, Any]:
        actor = self.supervisor.directory.get(row.key)
        return {
            "key": row.key,
            "name": row.name,
            "version": row.version,
            "state": row.state,
            "reason": row.reason,
            "worker_state": actor.phase.value if actor else None,
        }

    def detail(self, key: str) -> dict[str, Any]:
        row = self.plugin(key)
        actor = self.supervisor.directory.get(key)
        worker: dict[str, Any] | None = None
        if actor is not None:
            s = actor.state
            worker = {
                "state": s.phase.value,
                "reason": s.reason,
                "pid": actor.pid,
                "restarts": s.restarts,
                "started_at": actor.started_at,
                "next_retry_at": None
                if s.next_retry_at is None
                else time.time() + s.next_retry_at - trio.current_time(),
                "quarantine_rule": s.rule or None,
                "last_exit": actor.last_exit or None,
                "calls": actor.stats.total,
                "failed_calls": actor.stats.failed,
            }
        return {
            **self.summary(row),
            "manifest": row.manifest,
            "source_dir": row.source_dir,
            "properties": records.assigned_properties(self.db, key),
            "worker": worker,
            "health": actor.last_health if actor else None,
            "created_at": row.created_at,
            "updated_at": row.updated_at,
        }
