"""Properties, plugin assignments, cameras and Home Assistant keys.

Lists are pages: at most `limit` rows (PAGE by default), after a given id. Creating what
exists is a Conflict, decided by the primary key in the same write (no check-then-insert).
"""

from __future__ import annotations

import json
import sqlite3
import time
from typing import Any

import msgspec

from ...errors import Conflict, NotFound
from ..db import Database

PAGE = 1000


class PropertyRow(msgspec.Struct, frozen=True):
    id: str
    name: str
    created_at: float


async def create_property(db: Database, property_id: str, name: str) -> PropertyRow:
    """A new property; Conflict if the id exists."""
    row = PropertyRow(property_id, name, time.time())
    try:
        await db.execute(
            "INSERT INTO properties (id, name, created_at) VALUES (?, ?, ?)",
            (row.id, row.name, row.created_at),
        )
    except sqlite3.IntegrityError:
        raise Conflict(f"property {property_id!r} exists", {"property": property_id}) from None
    return row


def get_property(db: Database, property_id: str) -> PropertyRow | None:
    r = db.read_one("SELECT * FROM properties WHERE id = ?", (property_id,))
    return PropertyRow(r["id"], r["name"], r["created_at"]) if r else None


def list_properties(
    db: Database, *, after: str = "", limit: int = PAGE, only: list[str] | None = None
) -> list[PropertyRow]:
    """Properties by id, after `after`; `only` restricts them to these ids (at most a page)."""
    where, params = "id > ?", [after]
    if only is not None:
        where += f" AND id IN ({','.join('?' * len(only))})"
        params += only
    rows = db.read(f"SELECT * FROM properties WHERE {where} ORDER BY id LIMIT ?", (*params, limit))
    return [PropertyRow(r["id"], r["name"], r["created_at"]) for r in rows]


async def assign_property(db: Database, plugin_key: str, property_id: str) -> None:
    await db.execute(
        """INSERT INTO plugin_property_assignments (plugin_key, property_id, assigned_at)
           VALUES (?, ?, ?) ON CONFLICT DO NOTHING""",
        (plugin_key, property_id, time.time()),
    )


async def unassign_property(db: Database, plugin_key: str, property_id: str) -> int:
    return await db.execute(
        "DELETE FROM plugin_property_assignments WHERE plugin_key = ? AND property_id = ?",
        (plugin_key, property_id),
    )


def assigned_properties(db: Database, plugin_key: str) -> list[str]:
    rows = db.read(
        """SELECT property_id FROM plugin_property_assignments
           WHERE plugin_key = ? AND enabled = 1 ORDER BY property_id""",
        (plugin_key,),
    )
    return [r["property_id"] for r in rows]


def all_assignments(db: Database) -> dict[str, list[str]]:
    """plugin key -> its assigned properties, for every plugin at once (one read)."""
    rows = db.read(
        """SELECT plugin_key, property_id FROM plugin_property_assignments
           WHERE enabled = 1 ORDER BY plugin_key, property_id"""
    )
    out: dict[str, list[str]] = {}
    for r in rows:
        out.setdefault(r["plugin_key"], []).append(r["property_id"])
    return out


class CameraRow(msgspec.Struct, frozen=True):
    property_id: str
    id: str
    name: str
    source: dict[str, Any]
    has_audio: bool
    created_at: float


def _camera(r: sqlite3.Row) -> CameraRow:
    return CameraRow(
        r["property_id"],
        r["id"],
        r["name"],
        json.loads(r["source"]),
        bool(r["has_audio"]),
        r["created_at"],
    )


async def create_camera(
    db: Database,
    property_id: str,
    camera_id: str,
    *,
    name: str,
    source: dict[str, Any],
    has_audio: bool = False,
    credentials: str | None = None,
) -> CameraRow:
    """A new camera of a property; Conflict if it has one of that id, NotFound without it.
    `credentials` are sealed (`cameras/credentials.py`) and never part of a CameraRow."""
    row = CameraRow(property_id, camera_id, name, source, has_audio, time.time())
    try:
        await db.execute(
            """INSERT INTO cameras
               (property_id, id, name, source, has_audio, created_at, credentials)
               VALUES (?, ?, ?, ?, ?, ?, ?)""",
            (
                property_id,
                camera_id,
                name,
                json.dumps(source),
                int(has_audio),
                row.created_at,
                credentials,
            ),
        )
    except sqlite3.IntegrityError as exc:
        if "FOREIGN KEY" in str(exc):
            raise NotFound(f"no property {property_id!r}", {"property": property_id}) from None
        raise Conflict(
            f"property {property_id!r} already has a camera {camera_id!r}",
            {"property": property_id, "camera": camera_id},
        ) from None
    return row


def cameras_of(
    db: Database, property_id: str, *, after: str = "", limit: int = PAGE
) -> list[CameraRow]:
    """A property's cameras by id, at most `limit`, after camera `after`."""
    rows = db.read(
        "SELECT * FROM cameras WHERE property_id = ? AND id > ? ORDER BY id LIMIT ?",
        (property_id, after, limit),
    )
    return [_camera(r) for r in rows]


def get_camera(db: Database, property_id: str, camera_id: str) -> CameraRow | None:
    r = db.read_one(
        "SELECT * FROM cameras WHERE property_id = ? AND id = ?", (property_id, camera_id)
    )
    return _camera(r) if r else None


class HaKeyRateLimit(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """An operator's per-key request budget (`security.ha_keys.create_key` bounds it)."""

    requests: int
    window_s: float = 60.0


class HaKeyRow(msgspec.Struct, frozen=True):
    id: str
    property_id: str
    name: str
    created_at: float
    rate_limit: HaKeyRateLimit | None = None  # None: the listener's limit


def _ha_key(r: sqlite3.Row) -> HaKeyRow:
    limit = None
    if r["rate_limit_requests"] is not None:
        limit = HaKeyRateLimit(r["rate_limit_requests"], r["rate_limit_window_s"])
    return HaKeyRow(r["id"], r["property_id"], r["name"], r["created_at"], limit)


async def create_ha_key(
    db: Database,
    key_id: str,
    property_id: str,
    key_hash: str,
    name: str,
    *,
    rate_limit: HaKeyRateLimit | None = None,
) -> HaKeyRow:
    row = HaKeyRow(key_id, property_id, name, time.time(), rate_limit)
    await db.execute(
        "INSERT INTO ha_keys (id, property_id, key_hash, name, created_at, rate_limit_requests,"
        " rate_limit_window_s) VALUES (?, ?, ?, ?, ?, ?, ?)",
        (
            key_id,
            property_id,
            key_hash,
            name,
            row.created_at,
            rate_limit.requests if rate_limit else None,
            rate_limit.window_s if rate_limit else None,
        ),
    )
    return row


def ha_key_by_hash(db: Database, key_hash: str) -> HaKeyRow | None:
    r = db.read_one("SELECT * FROM ha_keys WHERE key_hash = ? AND revoked_at IS NULL", (key_hash,))
    return _ha_key(r) if r else None


def ha_keys_of(
    db: Database, property_id: str, *, after: str = "", limit: int = PAGE
) -> list[HaKeyRow]:
    """A property's live keys by creation, at most `limit`, those created after key `after`."""
    rows = db.read(
        """SELECT * FROM ha_keys WHERE property_id = ? AND revoked_at IS NULL
             AND (created_at, id) > (SELECT coalesce(max(created_at), 0), coalesce(max(id), '')
                                     FROM ha_keys WHERE id = ?)
           ORDER BY created_at, id LIMIT ?""",
        (property_id, after, limit),
    )
    return [_ha_key(r) for r in rows]


def get_ha_key(db: Database, key_id: str) -> HaKeyRow | None:
    r = db.read_one("SELECT * FROM ha_keys WHERE id = ? AND revoked_at IS NULL", (key_id,))
    return _ha_key(r) if r else None


async def revoke_ha_key(db: Database, key_id: str) -> int:
    return await db.execute(
        "UPDATE ha_keys SET revoked_at = ? WHERE id = ? AND revoked_at IS NULL",
        (time.time(), key_id),
    )
