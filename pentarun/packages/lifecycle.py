"""Lifecycle notifications: the core tells a plugin what happened to it (SPEC §9, issue 10).

    lifecycle = Lifecycle(db, directory)       supervisor.observers.subscribe(lifecycle.observe)
    lifecycle.notify(key, "activated", property_id="p1")

A plugin implements any of them with `@plugin.on_lifecycle(name)` (`async def f(ctx, event)`,
`event = {"event", "property", "detail"}`, ctx for that property when there is one):
    approved     the operator approved what it asked for (detail: version, digest)
    activated    enabled for a property (property)
    deactivated  no longer enabled for a property (property)
    reloaded     its worker now runs a new version (detail: previous, version)
    revoked      quarantined or uninstalled (detail: reason); its worker stops right after
Every notification is recorded on the plugin's timeline (`lifecycle_<name>`), delivered now
when its worker runs, else kept for its next start when it still means something then
(approved, activated, reloaded; a deactivation or revocation of a stopped worker is only
recorded). Delivery is an event on the worker's channel (`lifecycle.<name>`), at most once,
best effort: a worker that is killed before its handler ran misses it.
"""

from __future__ import annotations

from typing import Any

from ..store import records
from ..store.db import Database
from ..supervisor.directory import Directory
from ..supervisor.events import ActorEvent, StateChanged
from ..supervisor.policy import Phase

NAMES = ("approved", "activated", "deactivated", "reloaded", "revoked")
KEPT_FOR_NEXT_START = {"approved", "activated", "reloaded"}
PREFIX = "lifecycle."  # the event type a worker receives: lifecycle.<name>
MAX_KEPT = 32  # notifications kept per plugin for its next start


class Lifecycle:
    def __init__(self, db: Database, directory: Directory) -> None:
        self.db = db
        self.directory = directory
        # key -> (name, property, detail, version it is for ("": any)) for its next start
        self._kept: dict[str, list[tuple[str, str, dict[str, Any], str]]] = {}
        self._versions: dict[str, str] = {}  # key -> the version its last RUNNING worker ran

    def notify(
        self,
        key: str,
        name: str,
        *,
        property_id: str = "",
        detail: dict[str, Any] | None = None,
        version: str = "",
    ) -> None:
        """Record and deliver; `version`: only a worker of that version is told (an approval
        of an upgrade is for the new version, not the one running now)."""
        if name not in NAMES:
            raise ValueError(f"unknown lifecycle notification {name!r}")
        detail = detail or {}
        records.record_event(self.db, key, f"lifecycle_{name}", reason=property_id, detail=detail)
        if name in ("deactivated", "revoked"):  # a kept activation is no longer true
            undone = {property_id} if name == "deactivated" else None  # revoked: every one
            kept = self._kept.get(key, [])
            kept[:] = [
                k
                for k in kept
                if k[0] != "activated" or (undone is not None and k[1] not in undone)
            ]
        if self._deliver(key, name, property_id, detail, version):
            return
        if name in KEPT_FOR_NEXT_START:
            kept = self._kept.setdefault(key, [])
            kept.append((name, property_id, detail, version))
            del kept[:-MAX_KEPT]

    def forget(self, key: str) -> None:
        """The plugin is gone (uninstalled): nothing is kept for it."""
        self._kept.pop(key, None)
        self._versions.pop(key, None)

    def observe(self, event: ActorEvent) -> None:
        """Supervisor observer: a worker became RUNNING — a new version is `reloaded`, and
        what was kept for its start is delivered."""
        if not isinstance(event, StateChanged) or event.state != Phase.RUNNING.value:
            return
        actor = self.directory.get(event.key)
        if actor is None:
            return
        version, before = actor.manifest.version, self._versions.get(event.key)
        self._versions[event.key] = version
        if before is not None and before != version:
            self.notify(event.key, "reloaded", detail={"previous": before, "version": version})
        kept = []
        for name, property_id, detail, wanted in self._kept.pop(event.key, []):
            if not self._deliver(event.key, name, property_id, detail, wanted):
                kept.append((name, property_id, detail, wanted))  # for another version
        if kept:
            self._kept[event.key] = kept

    def _deliver(
        self, key: str, name: str, property_id: str, detail: dict[str, Any], version: str = ""
    ) -> bool:
        actor = self.directory.get(key)
        if actor is None or actor.phase is not Phase.RUNNING:
            return False
        if version and actor.manifest.version != version:
            return False
        body = {"event": name, "property": property_id, "detail": detail}
        return actor.deliver(PREFIX + name, property_id, body)
