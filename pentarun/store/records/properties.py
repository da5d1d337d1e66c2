"""Properties, plugin assignments, cameras and Home Assistant keys."""

from __future__ import annotations

import json
import sqlite3
import time
from typing import Any

import msgspec

from ..db import Database


class PropertyRow(msgspec.Struct, frozen=True):
    id: str
    name: str
    created_at: float


async def create_property(db: Database, property_id: str, name: str) -> PropertyRow:
    row = PropertyRow(property_id, name, time.time())
    await db.execute(
        "INSERT INTO properties (id, name, created_at) VALUES (?, ?, ?)",
        (row.id, row.name, row.created_at),
    )
    return row


def get_property(db: Database, property_id: str) -> PropertyRow | None:
    r = db.read_one("SELECT * FROM properties WHERE id = ?", (property_id,))
    return PropertyRow(r["id"], r["name"], r["created_at"]) if r else None


def list_properties(db: Database) -> list[PropertyRow]:
    return [
        PropertyRow(r["id"], r["name"], r["created_at"])
        for r in db.read("SELECT * FROM properties ORDER BY id")
    ]


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
) -> CameraRow:
    row = CameraRow(property_id, camera_id, name, source, has_audio, time.time())
    await db.execute(
        """INSERT INTO cameras (property_id, id, name, source, has_audio, created_at)
           VALUES (?, ?, ?, ?, ?, ?)""",
        (property_id, camera_id, name, json.dumps(source), int(has_audio), row.created_at),
    )
    return row


def cameras_of(db: Database, property_id: str) -> list[CameraRow]:
    rows = db.read("SELECT * FROM cameras WHERE property_id = ? ORDER BY id", (property_id,))
    return [_camera(r) for r in rows]


def get_camera(db: Database, property_id: str, camera_id: str) -> CameraRow | None:
    r = db.read_one(
        "SELECT * FROM cameras WHERE property_id = ? AND id = ?", (property_id, camera_id)
    )
    return _camera(r) if r else None


class HaKeyRow(msgspec.Struct, frozen=True):
    id: str
    property_id: str
    name: str
    created_at: float


async def create_ha_key(
    db: Database, key_id: str, property_id: str, key_hash: str, name: str
) -> HaKeyRow:
    row = HaKeyRow(key_id, property_id, name, time.time())
    await db.execute(
        "INSERT INTO ha_keys (id, property_id, key_hash, name, created_at) VALUES (?, ?, ?, ?, ?)",
        (key_id, property_id, key_hash, name, row.created_at),
    )
    return row


def ha_key_by_hash(db: Database, key_hash: str) -> HaKeyRow | None:
    r = db.read_one("SELECT * FROM ha_keys WHERE key_hash = ? AND revoked_at IS NULL", (key_hash,))
    return HaKeyRow(r["id"], r["property_id"], r["name"], r["created_at"]) if r else None


def ha_keys_of(db: Database, property_id: str) -> list[HaKeyRow]:
    rows = db.read(
        "SELECT * FROM ha_keys WHERE property_id = ? AND revoked_at IS NULL ORDER BY created_at",
        (property_id,),
    )
    return [HaKeyRow(r["id"], r["property_id"], r["name"], r["created_at"]) for r in rows]


def get_ha_key(db: Database, key_id: str) -> HaKeyRow | None:
    r = db.read_one("SELECT * FROM ha_keys WHERE id = ? AND revoked_at IS NULL", (key_id,))
    return HaKeyRow(r["id"], r["property_id"], r["name"], r["created_at"]) if r else None


async def revoke_ha_key(db: Database, key_id: str) -> int:
    return await db.execute(
        "UPDATE ha_keys SET revoked_at = ? WHERE id = ? AND revoked_at IS NULL",
        (time.time(), key_id),
    )
