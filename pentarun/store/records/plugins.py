"""Plugins: their records, lifecycle events, health checks, stored state and configuration."""

from __future__ import annotations

import json
import sqlite3
import time
from typing import Any, NamedTuple

import msgspec

from ...packages.manifest import Manifest
from ..db import Database


class PluginRow(msgspec.Struct, frozen=True):
    key: str
    name: str
    version: str
    state: str
    reason: str
    source_dir: str
    manifest: Manifest | None  # None only for a row written without one (or unreadable)
    created_at: float
    updated_at: float


class EventRow(msgspec.Struct, frozen=True):
    id: int
    plugin_key: str
    at: float
    type: str
    state: str
    reason: str
    next_retry_at: float | None
    detail: dict[str, Any]


class HealthRow(msgspec.Struct, frozen=True):
    checked_at: float
    ok: bool
    latency_ms: float | None
    detail: dict[str, Any]


def _plugin(row: sqlite3.Row) -> PluginRow:
    return PluginRow(
        row["key"],
        row["name"],
        row["version"],
        row["state"],
        row["reason"],
        row["source_dir"],
        _manifest(row["manifest"]),
        row["created_at"],
        row["updated_at"],
    )


def _manifest(text: str) -> Manifest | None:
    """The stored manifest, decoded once; rows of old source runs may hold a partial one."""
    try:
        return msgspec.json.decode(text, type=Manifest)
    except (msgspec.ValidationError, msgspec.DecodeError):
        return None


async def upsert_plugin(
    db: Database,
    key: str,
    *,
    name: str,
    version: str,
    state: str,
    reason: str = "",
    source_dir: str = "",
    manifest: Manifest | None = None,
) -> None:
    now = time.time()
    await db.execute(
        """INSERT INTO enhanced_plugins
           (key, name, version, state, reason, source_dir, manifest, created_at, updated_at)
           VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)
           ON CONFLICT (key) DO UPDATE SET name=excluded.name, version=excluded.version,
             state=excluded.state, reason=excluded.reason, source_dir=excluded.source_dir,
             manifest=excluded.manifest, updated_at=excluded.updated_at""",
        (key, name, version, state, reason, source_dir, _encode(manifest), now, now),
    )


def _encode(manifest: Manifest | None) -> str:
    return "{}" if manifest is None else msgspec.json.encode(manifest).decode()


def get_plugin(db: Database, key: str) -> PluginRow | None:
    row = db.read_one("SELECT * FROM enhanced_plugins WHERE key = ?", (key,))
    return _plugin(row) if row else None


def list_plugins(db: Database, *, after: str = "", limit: int | None = None) -> list[PluginRow]:
    """Plugins by key after `after`; at most `limit` of them when given (pages of the API)."""
    rows = db.read(
        "SELECT * FROM enhanced_plugins WHERE key > ? ORDER BY key LIMIT ?",
        (after, -1 if limit is None else limit),
    )
    return [_plugin(r) for r in rows]


def plugin_state_counts(db: Database) -> dict[str, int]:
    """How many plugins are in each state (one aggregate row per state, nothing decoded)."""
    rows = db.read("SELECT state, count(*) AS n FROM enhanced_plugins GROUP BY state")
    return {r["state"]: int(r["n"]) for r in rows}


def set_plugin_state(db: Database, key: str, state: str, reason: str) -> None:
    db.defer(
        "UPDATE enhanced_plugins SET state = ?, reason = ?, updated_at = ? WHERE key = ?",
        (state, reason, time.time(), key),
    )


def record_event(
    db: Database,
    plugin_key: str,
    type_: str,
    *,
    state: str = "",
    reason: str = "",
    next_retry_at: float | None = None,
    detail: dict[str, Any] | None = None,
) -> None:
    db.defer(
        """INSERT INTO plugin_events (plugin_key, at, type, state, reason, next_retry_at, detail)
           VALUES (?, ?, ?, ?, ?, ?, ?)""",
        (plugin_key, time.time(), type_, state, reason, next_retry_at, json.dumps(detail or {})),
    )
    db.notify(
        "event",
        {
            "type": type_,
            "plugin": plugin_key,
            "state": state,
            "reason": reason,
            "next_retry_at": next_retry_at,
            "detail": detail or {},
        },
    )


def list_events(
    db: Database, plugin_key: str, limit: int = 100, before: int | None = None
) -> list[EventRow]:
    """The newest `limit` events of a plugin, older than event id `before` if given."""
    rows = db.read(
        """SELECT * FROM plugin_events WHERE plugin_key = ? AND id < ?
           ORDER BY id DESC LIMIT ?""",
        (plugin_key, 2**63 - 1 if before is None else before, limit),
    )
    return [
        EventRow(
            r["id"],
            r["plugin_key"],
            r["at"],
            r["type"],
            r["state"],
            r["reason"],
            r["next_retry_at"],
            json.loads(r["detail"]),
        )
        for r in rows
    ]


def record_health(
    db: Database, plugin_key: str, ok: bool, latency_ms: float | None, detail: dict[str, Any]
) -> None:
    db.defer(
        """INSERT INTO plugin_health_checks (plugin_key, checked_at, ok, latency_ms, detail)
           VALUES (?, ?, ?, ?, ?)""",
        (plugin_key, time.time(), int(ok), latency_ms, json.dumps(detail, default=str)),
    )


def list_health(
    db: Database, plugin_key: str, limit: int = 100, before: float | None = None
) -> list[HealthRow]:
    """The newest `limit` health checks of a plugin, made before time `before` if given."""
    rows = db.read(
        """SELECT * FROM plugin_health_checks WHERE plugin_key = ? AND checked_at < ?
           ORDER BY checked_at DESC LIMIT ?""",
        (plugin_key, float("inf") if before is None else before, limit),
    )
    return [
        HealthRow(r["checked_at"], bool(r["ok"]), r["latency_ms"], json.loads(r["detail"]))
        for r in rows
    ]


_state_encoder = msgspec.msgpack.Encoder()


def state_get(db: Database, plugin_key: str, property_id: str, key: str) -> tuple[bool, Any]:
    row = db.read_one(
        "SELECT value FROM plugin_state WHERE plugin_key = ? AND property_id = ? AND key = ?",
        (plugin_key, property_id, key),
    )
    return (True, msgspec.msgpack.decode(row["value"])) if row else (False, None)


class StateRefused(NamedTuple):
    """Why `state_set` stored nothing: `limit` "keys" (the property already holds `max_keys`
    keys) or "bytes" (the plugin's values, all properties, would pass `max_bytes`); `held` is
    what it holds now (keys in the property, or bytes)."""

    limit: str
    held: int


async def state_set(
    db: Database,
    plugin_key: str,
    property_id: str,
    key: str,
    value: Any,
    *,
    max_keys: int | None = None,
    max_bytes: int | None = None,
) -> StateRefused | None:
    """Store `value` under `key` (None), or refuse and store nothing (a `StateRefused`).

    With `max_keys`, a new key is refused when the plugin already holds that many keys in the
    property; counting stops at `max_keys`, so the check is bounded however many keys an older
    store holds. With `max_bytes`, a value that grows what the plugin holds (its encoded
    values, all properties) past `max_bytes` is refused: one SUM over the plugin's rows in
    the same transaction, and only when the value grows (a replacement as large or smaller
    always works, so a plugin over a lowered limit can still shrink)."""
    encoded = _state_encoder.encode(value)
    owner = (plugin_key, property_id)

    def put(conn: sqlite3.Connection) -> StateRefused | None:
        row = conn.execute(
            """SELECT length(value) FROM plugin_state
               WHERE plugin_key = ? AND property_id = ? AND key = ?""",
            (*owner, key),
        ).fetchone()
        old = 0 if row is None else int(row[0])
        if max_keys is not None and row is None:
            (held,) = conn.execute(
                """SELECT count(*) FROM (SELECT 1 FROM plugin_state
                   WHERE plugin_key = ? AND property_id = ? LIMIT ?)""",
                (*owner, max_keys),
            ).fetchone()
            if held >= max_keys:
                return StateRefused("keys", int(held))
        if max_bytes is not None and len(encoded) > old:
            held = plugin_state_bytes_in(conn, plugin_key)
            if held - old + len(encoded) > max_bytes:
                return StateRefused("bytes", held)
        conn.execute(
            """INSERT INTO plugin_state (plugin_key, property_id, key, value, updated_at)
               VALUES (?, ?, ?, ?, ?)
               ON CONFLICT (plugin_key, property_id, key)
               DO UPDATE SET value = excluded.value, updated_at = excluded.updated_at""",
            (*owner, key, encoded, time.time()),
        )
        return None

    return await db.write(put)


_STATE_BYTES = "SELECT coalesce(sum(length(value)), 0) FROM plugin_state WHERE plugin_key = ?"


def plugin_state_bytes_in(conn: sqlite3.Connection, plugin_key: str) -> int:
    """The bytes of the plugin's stored values, all properties: an indexed range of its rows
    (`length` of a BLOB reads the record header, not the value)."""
    (held,) = conn.execute(_STATE_BYTES, (plugin_key,)).fetchone()
    return int(held)


def plugin_state_bytes(db: Database, plugin_key: str) -> int:
    """`plugin_state_bytes_in`, read inline (a small indexed read)."""
    row = db.read_one(_STATE_BYTES, (plugin_key,))
    return int(row[0]) if row else 0


async def state_delete(db: Database, plugin_key: str, property_id: str, key: str) -> None:
    await db.execute(
        "DELETE FROM plugin_state WHERE plugin_key = ? AND property_id = ? AND key = ?",
        (plugin_key, property_id, key),
    )


def state_keys(
    db: Database, plugin_key: str, property_id: str, *, after: str = "", limit: int = 1000
) -> list[str]:
    """At most `limit` keys of the plugin in the property, in key order, after `after`: one
    indexed range read of the primary key, as small as `limit` makes it."""
    rows = db.read(
        """SELECT key FROM plugin_state WHERE plugin_key = ? AND property_id = ? AND key > ?
           ORDER BY key LIMIT ?""",
        (plugin_key, property_id, after, limit),
    )
    return [r["key"] for r in rows]


async def delete_plugin(db: Database, plugin_key: str) -> None:
    """Forget a plugin: its record, installs, assignments and stored state (history stays)."""

    def forget(conn: sqlite3.Connection) -> None:
        for table, column in (
            ("plugin_installs", "plugin_key"),
            ("plugin_state", "plugin_key"),
            ("plugin_property_assignments", "plugin_key"),
            ("plugin_configs", "plugin_key"),
            ("enhanced_plugins", "key"),
        ):
            conn.execute(f"DELETE FROM {table} WHERE {column} = ?", (plugin_key,))

    await db.write(forget)


def get_config(db: Database, plugin_key: str) -> dict[str, Any]:
    row = db.read_one("SELECT config FROM plugin_configs WHERE plugin_key = ?", (plugin_key,))
    return dict(json.loads(row["config"])) if row else {}


async def set_config(db: Database, plugin_key: str, config: dict[str, Any]) -> None:
    await db.execute(
        """INSERT INTO plugin_configs (plugin_key, config, updated_at) VALUES (?, ?, ?)
           ON CONFLICT (plugin_key) DO UPDATE SET config = excluded.config,
             updated_at = excluded.updated_at""",
        (plugin_key, json.dumps(config), time.time()),
    )
