"""The plugins this server knows: their records, their actors, their property assignments.

Plugins arrive through the install pipeline (packages/service.py) or straight from a source
directory (`pentarun serve --plugin-dir DIR`). A source tree goes through the same checks and
the same start path as an installed plugin: its definition.json is validated by the real
manifest validator (every problem reported), `worker/plugin_worker.py` must exist, and the
install service records it (ENABLED, reason "running from source") and starts its worker and
its listener. Its properties are the ones operators assign; none are assigned on their own.

Every plugin's detail carries its security rating (`security_rating`: score, base, reasons;
packages/rating.py) and the list carries its score: the shown install's manifest and
requirements, or for a source tree its manifest and the requirements.txt read when it was
started, on this server (sandbox on or off) with the operator's egress grants, which the
routes pass in.
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import msgspec
import trio

from . import __version__
from .errors import BadRequest, NotFound
from .lanes.egress import egress_detail
from .packages.manifest import Manifest, validate_manifest
from .packages.package import DEFINITION, ENTRYPOINT, REQUIREMENTS
from .packages.rating import Rating, security_rating
from .packages.requirements import parse_requirements
from .packages.service import Installs
from .sandbox.launcher import SandboxStatus
from .store import records
from .store.db import Database
from .supervisor.actor import WorkerActor
from .supervisor.supervisor import Supervisor


def read_source_definition(root: Path) -> tuple[Path, Manifest]:
    """Read and validate a plugin source tree; its absolute path and manifest, or BadRequest
    listing every problem."""
    root = root.resolve()
    path = root / DEFINITION
    try:
        raw = json.loads(path.read_bytes().decode("utf-8"))
    except (OSError, ValueError) as exc:
        raise BadRequest(f"cannot read {path}: {exc}") from exc
    manifest, problems = validate_manifest(raw, engine_version=__version__)
    details = [msgspec.to_builtins(p) for p in problems]
    if not (root / ENTRYPOINT).is_file():
        details.append({"code": "package.missing_file", "path": ENTRYPOINT, "message": "missing"})
    if manifest is None or details:
        lines = "\n".join(f"  {d['code']}  {d['path']}: {d['message']}" for d in details)
        raise BadRequest(
            f"{root} cannot run: {len(details)} problem(s)\n{lines}", {"problems": details}
        )
    return root, manifest


def read_source_requirements(root: Path) -> list[str]:
    """The requirement lines of a source tree's requirements.txt ([] without one)."""
    try:
        text = (root / REQUIREMENTS).read_text(encoding="utf-8", errors="replace")
    except OSError:
        return []
    lines, problems = parse_requirements(text)
    return lines + [p.path for p in problems]  # a line it cannot read still counts as code


class Registry:
    def __init__(self, db: Database, supervisor: Supervisor, installs: Installs) -> None:
        self.db = db
        self.supervisor = supervisor
        self.installs = installs
        self._source_requirements: dict[str, list[str]] = {}  # key -> as read at its start

    async def run_from_source(self, root: Path) -> WorkerActor:
        root, manifest = await trio.to_thread.run_sync(read_source_definition, root)
        requirements = await trio.to_thread.run_sync(read_source_requirements, root)
        self._source_requirements[manifest.key] = requirements
        return await self.installs.run_from_source(root, manifest)

    def rating(self, row: records.PluginRow, egress_grants: Sequence[str] = ()) -> Rating | None:
        """The plugin's security rating; None only for a record without a manifest."""
        rating = self.installs.plugin_rating(row.key, egress_grants)
        if rating is not None or row.manifest is None:
            return rating
        requirements = self._source_requirements.get(row.key, [])
        return security_rating(row.manifest, requirements, self.installs.sandbox_on, egress_grants)

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
        self.installs.lifecycle.notify(key, "activated", property_id=property_id)

    async def unassign(self, key: str, property_id: str) -> None:
        self.plugin(key)
        if not await records.unassign_property(self.db, key, property_id):
            raise NotFound(f"plugin {key!r} is not assigned to {property_id!r}")
        self.installs.lifecycle.notify(key, "deactivated", property_id=property_id)
        self._refresh(key)

    def _refresh(self, key: str) -> None:
        actor = self.supervisor.directory.get(key)
        if actor is not None:
            actor.refresh_token()

    def summary(self, row: records.PluginRow, egress_grants: Sequence[str] = ()) -> dict[str, Any]:
        return self._summary(row, self.rating(row, egress_grants))

    def _summary(self, row: records.PluginRow, rating: Rating | None) -> dict[str, Any]:
        actor = self.supervisor.directory.get(row.key)
        _, degraded = self.installs.dependencies.status_of(row)
        return {
            "key": row.key,
            "name": row.name,
            "version": row.version,
            "state": row.state,
            "reason": row.reason,
            "worker_state": actor.phase.value if actor else None,
            "security_rating": None if rating is None else {"score": rating.score},
            # a dependency is missing, disabled, quarantined or out of range (dependencies.py)
            "degraded": degraded or None,
            "update_available": self._update(row),
        }

    def _update(self, row: records.PluginRow) -> dict[str, Any] | None:
        """A newer version in the catalog (packages/catalog.py), as of its last scan."""
        entry = self.installs.catalog.update_for(row.key, row.version)
        if entry is None or not records.installs_of(self.db, row.key):
            return None  # none, or it runs from source: the catalog does not upgrade that
        return {"version": entry.version, "file": entry.file}

    def _sandbox(self) -> dict[str, object]:
        """How this plugin's worker is confined: the server's sandbox state (off is reported
        on every plugin, as the operator's choice)."""
        sandbox = self.supervisor.sandbox
        if sandbox is None:
            return SandboxStatus("off", True).report()
        return sandbox.status.report()

    def detail(self, key: str, egress_grants: Sequence[str] = ()) -> dict[str, Any]:
        row = self.plugin(key)
        rating = self.rating(row, egress_grants)
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
                "calls_out": actor.telemetry.outgoing.total,  # to its dependencies
                "failed_calls_out": actor.telemetry.outgoing.failed,
            }
        return {
            **self._summary(row, rating),
            "security_rating": None if rating is None else msgspec.to_builtins(rating),
            "manifest": msgspec.to_builtins(row.manifest) if row.manifest else {},
            "source_dir": row.source_dir,
            "properties": records.assigned_properties(self.db, key),
            "dependencies": [
                msgspec.to_builtins(d) for d in self.installs.dependencies.status_of(row)[0]
            ],
            "worker": worker,
            "sandbox": self._sandbox(),
            "egress": egress_detail(self.db, key),  # operator grants, refused requests
            "health": actor.last_health if actor else None,
            "created_at": row.created_at,
            "updated_at": row.updated_at,
        }
