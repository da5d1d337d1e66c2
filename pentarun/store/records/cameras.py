"""What the camera hub reads and the admin API changes of a camera's source: the source and
its sealed credentials (a column no CameraRow carries, so no response can show it)."""

from __future__ import annotations

import json
from typing import Any

import msgspec

from ...errors import NotFound
from ..db import Database


class CameraSourceRow(msgspec.Struct, frozen=True):
    property_id: str
    id: str
    name: str
    source: dict[str, Any]
    credentials: str | None  # sealed; only the hub unseals it


def camera_sources(db: Database) -> list[CameraSourceRow]:
    """Every camera's source and sealed credentials (one read), for the hub."""
    rows = db.read("SELECT property_id, id, name, source, credentials FROM cameras")
    return [
        CameraSourceRow(
            r["property_id"], r["id"], r["name"], json.loads(r["source"]), r["credentials"]
        )
        for r in rows
    ]


async def set_camera_source(
    db: Database,
    property_id: str,
    camera_id: str,
    source: dict[str, Any],
    credentials: str | None,
) -> None:
    """Replace a camera's source and its credentials (None: none); NotFound without it."""
    changed = await db.execute(
        "UPDATE cameras SET source = ?, credentials = ? WHERE property_id = ? AND id = ?",
        (json.dumps(source), credentials, property_id, camera_id),
    )
    if changed == 0:
        raise NotFound(f"no camera {camera_id!r}", {"camera": camera_id})
