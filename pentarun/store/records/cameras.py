"""What the camera hub reads and the admin API changes of a camera's source: the source and
its sealed credentials (a column no CameraRow carries, so no response can show it), and the
camera's motion settings, kept in the source's JSON under `"motion"` (cameras/motion.py)."""

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
    """Replace a camera's source and its credentials (None: none), keeping its motion
    settings; NotFound without it."""
    changed = await db.execute(
        """UPDATE cameras SET credentials = ?, source = CASE
               WHEN json_type(source, '$.motion') = 'object'
               THEN json_set(?, '$.motion', json(json_extract(source, '$.motion')))
               ELSE ? END
           WHERE property_id = ? AND id = ?""",
        (credentials, json.dumps(source), json.dumps(source), property_id, camera_id),
    )
    if changed == 0:
        raise NotFound(f"no camera {camera_id!r}", {"camera": camera_id})


async def set_camera_motion(
    db: Database, property_id: str, camera_id: str, motion: dict[str, Any]
) -> None:
    """Replace a camera's motion settings, kept in its JSON `source` under `"motion"` (no
    column of their own: the hub reads only the source's kind, url and path); NotFound
    without it."""
    changed = await db.execute(
        """UPDATE cameras SET source = json_set(source, '$.motion', json(?))
           WHERE property_id = ? AND id = ?""",
        (json.dumps(motion), property_id, camera_id),
    )
    if changed == 0:
        raise NotFound(f"no camera {camera_id!r}", {"camera": camera_id})
