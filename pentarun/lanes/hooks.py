"""Hooks: named extension points (`snapshot.annotate`, ...) that plugins can join.

`run(name, property, payload)` calls, for every running plugin serving the property whose
manifest declares the hook, its `hook:<name>` handler in priority order (higher first), each
within the manifest's `timeout_ms`. A handler returns a dict of fields to replace in the
payload, or nothing; one that fails or is too slow is skipped and recorded, never fatal.
The recorded reason repeats the worker's error code and message clipped (`calls.clip`): a
plugin's text never lands unbounded in its events or the live feed.
"""

from __future__ import annotations

import logging
from typing import Any

from ..errors import PentarunError
from ..ipc.messages import Reply
from ..store import records
from ..store.db import Database
from ..supervisor.directory import Directory
from .calls import clip

log = logging.getLogger(__name__)

PREFIX = "hook:"
MAX_REASON_SHOWN = 200  # characters of a failing hook's error message an event keeps


class HookLane:
    def __init__(self, db: Database, directory: Directory) -> None:
        self.db = db
        self.directory = directory

    def _joined(self, name: str, property_id: str, exclude: str) -> list[tuple[int, str, float]]:
        """(priority, plugin key, timeout in s) of the plugins that join this hook here."""
        joined = []
        for actor in self.directory.serving(property_id):
            key = actor.key
            if key == exclude:
                continue
            hook = actor.manifest.hooks.get(name)
            if hook is not None:
                joined.append((hook.priority, key, hook.timeout_ms / 1000))
        return sorted(joined, key=lambda j: (-j[0], j[1]))

    async def run(
        self, name: str, property_id: str, payload: dict[str, Any], exclude: str = ""
    ) -> dict[str, Any]:
        """The payload after every joined plugin but `exclude` (the one asking) had its turn."""
        for _, key, timeout_s in self._joined(name, property_id, exclude):
            actor = self.directory.get(key)
            if actor is None:
                continue
            try:
                reply = await actor.call(PREFIX + name, property_id, payload, timeout_s)
            except PentarunError as exc:
                records.record_event(
                    self.db,
                    key,
                    "hook_failed",
                    reason=f"{name}: {clip(exc.error_code)}: {clip(exc.message, MAX_REASON_SHOWN)}",
                )
                continue
            if isinstance(reply, Reply) and isinstance(reply.value, dict):
                payload = {**payload, **reply.value}
            elif isinstance(reply, Reply) and reply.value is not None:
                records.record_event(
                    self.db,
                    key,
                    "hook_failed",
                    reason=f"{name}: answered {type(reply.value).__name__}, not a dict",
                )
        return payload
