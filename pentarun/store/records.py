"""Typed queries: every row the runtime reads or writes, as msgspec Structs.

Writes a request waits for go through `Database.write`; bookkeeping nobody waits for (health
checks, lifecycle events, audit) goes through `Database.defer` and is group-committed.
"""

from __future__ import annotations

import json
import sqlite3
import time
from typing import Any

import msgspec

from .db import Database


class PluginRow(msgspec.Struct, frozen=True):
    key: str
    name: str
    version: str
    state: str
    reason: str
    source_dir: str
    manifest: dict[str, Any]
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


class PropertyRow(msgspec.Struct, frozen=True):
    id: str
    name: str
    created_at: float


class OperatorRow(msgspec.Struct, frozen=True):
    id: str
    name: str
    role: str
    properties: list[str]
    created_at: float


class AuditRow(msgspec.Struct, frozen=True):
    id: int
    at: float
    actor: str
    type: str
    plugin: str
    property: str
    risk_score: int
    detail: dict[str, Any]


def _plugin(row: sqlite3.Row) -> PluginRow:
    return PluginRow(
        row["key"],
        row["name"],
        row["version"],
        row["state"],
        row["reason"],
        row["source_dir"],
        json.loads(row["manifest"]),
        row["created_at"],
        row["updated_at"],
    )


# --- plugins ------------------------------------------------------------------------------


async def upsert_plugin(
    db: Database,
    key: str,
    *,
    name: str,
    version: str,
    state: str,
    reason: str = "",
    source_dir: str = "",
    manifest: dict[str, Any] | None = None,
) -> None:
    now = time.time()
    await db.execute(
        """INSERT INTO enhanced_plugins
           (key, name, version, state, reason, source_dir, manifest, created_at, updated_at)
           VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)
           ON CONFLICT (key) DO UPDATE SET name=excluded.name, version=excluded.version,
             state=excluded.state, reason=excluded.reason, source_dir=excluded.source_dir,
             manifest=excluded.manifest, updated_at=excluded.updated_at""",
        (key, name, version, state, reason, source_dir, json.dumps(manifest or {}), now, now),
    )


def get_plugin(db: Database, key: str) -> PluginRow | None:
    row = db.read_one("SELECT * FROM enhanced_plugins WHERE key = ?", (key,))
    return _plugin(row) if row else None


def list_plugins(db: Database) -> list[PluginRow]:
    return [_plugin(r) for r in db.read("SELECT * FROM enhanced_plugins ORDER BY key")]


def set_plugin_state(db: Database, key: str, state: str, reason: str) -> None:
    db.defer(
        "UPDATE enhanced_plugins SET state = ?, reason = ?, updated_at = ? WHERE key = ?",
        (state, reason, time.time(), key),
    )


# --- lifecycle events and health ----------------------------------------------------------


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


def list_events(db: Database, plugin_key: str, limit: int = 100) -> list[EventRow]:
    rows = db.read(
        "SELECT * FROM plugin_events WHERE plugin_key = ? ORDER BY id DESC LIMIT ?",
        (plugin_key, limit),
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


def list_health(db: Database, plugin_key: str, limit: int = 100) -> list[HealthRow]:
    rows = db.read(
        """SELECT * FROM plugin_health_checks WHERE plugin_key = ?
           ORDER BY checked_at DESC LIMIT ?""",
        (plugin_key, limit),
    )
    return [
        HealthRow(r["checked_at"], bool(r["ok"]), r["latency_ms"], json.loads(r["detail"]))
        for r in rows
    ]


# --- plugin state (ctx.store) ----------------------------------------------------------------

_state_encoder = msgspec.msgpack.Encoder()


def state_get(db: Database, plugin_key: str, property_id: str, key: str) -> tuple[bool, Any]:
    row = db.read_one(
        "SELECT value FROM plugin_state WHERE plugin_key = ? AND property_id = ? AND key = ?",
        (plugin_key, property_id, key),
    )
    return (True, msgspec.msgpack.decode(row["value"])) if row else (False, None)


async def state_set(db: Database, plugin_key: str, property_id: str, key: str, value: Any) -> None:
    await db.execute(
        """INSERT INTO plugin_state (plugin_key, property_id, key, value, updated_at)
           VALUES (?, ?, ?, ?, ?)
           ON CONFLICT (plugin_key, property_id, key)
           DO UPDATE SET value = excluded.value, updated_at = excluded.updated_at""",
        (plugin_key, property_id, key, _state_encoder.encode(value), time.time()),
    )


async def state_delete(db: Database, plugin_key: str, property_id: str, key: str) -> None:
    await db.execute(
        "DELETE FROM plugin_state WHERE plugin_key = ? AND property_id = ? AND key = ?",
        (plugin_key, property_id, key),
    )


def state_keys(db: Database, plugin_key: str, property_id: str) -> list[str]:
    rows = db.read(
        "SELECT key FROM plugin_state WHERE plugin_key = ? AND property_id = ? ORDER BY key",
        (plugin_key, property_id),
    )
    return [r["key"] for r in rows]


# --- properties and assignments --------------------------------------------------------------


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


# --- operators and audit ---------------------------------------------------------------------


async def create_operator(
    db: Database,
    operator_id: str,
    *,
    name: str,
    role: str,
    token_hash: str,
    properties: list[str],
) -> OperatorRow:
    row = OperatorRow(operator_id, name, role, properties, time.time())
    await db.execute(
        """INSERT INTO operators (id, name, role, token_hash, properties, created_at)
           VALUES (?, ?, ?, ?, ?, ?)""",
        (row.id, name, role, token_hash, json.dumps(properties), row.created_at),
    )
    return row


def operator_by_token_hash(db: Database, token_hash: str) -> OperatorRow | None:
    r = db.read_one(
        "SELECT * FROM operators WHERE token_hash = ? AND revoked_at IS NULL", (token_hash,)
    )
    return _operator(r) if r else None


def count_operators(db: Database) -> int:
    row = db.read_one("SELECT count(*) AS n FROM operators")
    return int(row["n"]) if row else 0


def audit(
    db: Database,
    actor: str,
    type_: str,
    *,
    plugin: str = "",
    property_id: str = "",
    risk_score: int = 0,
    detail: dict[str, Any] | None = None,
) -> None:
    db.defer(
        """INSERT INTO audit_log (at, actor, type, plugin, property, risk_score, detail)
           VALUES (?, ?, ?, ?, ?, ?, ?)""",
        (
            time.time(),
            actor,
            type_,
            plugin,
            property_id,
            risk_score,
            json.dumps(detail or {}, default=str),
        ),
    )
    db.notify(
        "audit",
        {
            "type": type_,
            "actor": actor,
            "plugin": plugin,
            "property": property_id,
            "risk_score": risk_score,
            "detail": detail or {},
        },
    )


def list_audit(
    db: Database,
    *,
    plugin: str | None = None,
    property_id: str | None = None,
    type_: str | None = None,
    since: float | None = None,
    limit: int = 500,
) -> list[AuditRow]:
    clauses: list[str] = []
    params: list[Any] = []
    for column, value in (("plugin", plugin), ("property", property_id), ("type", type_)):
        if value is not None:
            clauses.append(f"{column} = ?")
            params.append(value)
    if since is not None:
        clauses.append("at >= ?")
        params.append(since)
    where = f"WHERE {' AND '.join(clauses)}" if clauses else ""
    rows = db.read(f"SELECT * FROM audit_log {where} ORDER BY id DESC LIMIT ?", (*params, limit))
    return [
        AuditRow(
            r["id"],
            r["at"],
            r["actor"],
            r["type"],
            r["plugin"],
            r["property"],
            r["risk_score"],
            json.loads(r["detail"]),
        )
        for r in rows
    ]


# --- install jobs and test runs ------------------------------------------------------------


class InstallRow(msgspec.Struct, frozen=True):
    id: str
    plugin_key: str
    version: str
    job: dict[str, Any]
    approval: dict[str, Any] | None
    package_digest: str
    manifest: dict[str, Any]
    file_hashes: dict[str, str]
    active: bool
    last_run_id: str | None
    created_at: float
    updated_at: float


def _install(r: sqlite3.Row) -> InstallRow:
    return InstallRow(
        r["id"],
        r["plugin_key"],
        r["version"],
        json.loads(r["job"]),
        json.loads(r["approval"]) if r["approval"] else None,
        r["package_digest"],
        json.loads(r["manifest"]),
        json.loads(r["file_hashes"]),
        bool(r["active"]),
        r["last_run_id"],
        r["created_at"],
        r["updated_at"],
    )


async def create_install(
    db: Database,
    install_id: str,
    *,
    plugin_key: str,
    version: str,
    job: dict[str, Any],
    package_digest: str,
    manifest: dict[str, Any],
    file_hashes: dict[str, str],
) -> None:
    now = time.time()
    await db.execute(
        """INSERT INTO plugin_installs (id, plugin_key, version, job, package_digest, manifest,
             file_hashes, created_at, updated_at)
           VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)""",
        (
            install_id,
            plugin_key,
            version,
            json.dumps(job),
            package_digest,
            json.dumps(manifest),
            json.dumps(file_hashes),
            now,
            now,
        ),
    )


async def save_install(db: Database, install_id: str, job: dict[str, Any]) -> None:
    """The job's new state; only the pipeline driver writes it."""
    await db.execute(
        "UPDATE plugin_installs SET job = ?, updated_at = ? WHERE id = ?",
        (json.dumps(job), time.time(), install_id),
    )


async def set_install_approval(db: Database, install_id: str, approval: dict[str, Any]) -> None:
    await db.execute(
        "UPDATE plugin_installs SET approval = ?, updated_at = ? WHERE id = ?",
        (json.dumps(approval), time.time(), install_id),
    )


async def set_install_test_run(db: Database, install_id: str, run_id: str) -> None:
    await db.execute(
        "UPDATE plugin_installs SET last_run_id = ?, updated_at = ? WHERE id = ?",
        (run_id, time.time(), install_id),
    )


def get_install(db: Database, install_id: str) -> InstallRow | None:
    r = db.read_one("SELECT * FROM plugin_installs WHERE id = ?", (install_id,))
    return _install(r) if r else None


def installs_of(db: Database, plugin_key: str) -> list[InstallRow]:
    rows = db.read(
        "SELECT * FROM plugin_installs WHERE plugin_key = ? ORDER BY created_at, rowid",
        (plugin_key,),
    )
    return [_install(r) for r in rows]


def all_installs(db: Database) -> list[InstallRow]:
    return [_install(r) for r in db.read("SELECT * FROM plugin_installs ORDER BY created_at")]


async def activate_install(db: Database, plugin_key: str, install_id: str) -> None:
    """Make one install the plugin's active version, in one transaction."""

    def swap(conn: sqlite3.Connection) -> None:
        conn.execute("UPDATE plugin_installs SET active = 0 WHERE plugin_key = ?", (plugin_key,))
        conn.execute("UPDATE plugin_installs SET active = 1 WHERE id = ?", (install_id,))

    await db.write(swap)


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


class TestRunRow(msgspec.Struct, frozen=True):
    id: str
    plugin_key: str
    version: str
    started_at: float
    finished_at: float | None
    status: str
    report: dict[str, Any]


async def start_test_run(db: Database, run_id: str, plugin_key: str, version: str) -> None:
    await db.execute(
        """INSERT INTO plugin_test_runs (id, plugin_key, version, started_at, status)
           VALUES (?, ?, ?, ?, 'running')""",
        (run_id, plugin_key, version, time.time()),
    )


async def finish_test_run(db: Database, run_id: str, status: str, report: dict[str, Any]) -> None:
    await db.execute(
        "UPDATE plugin_test_runs SET finished_at = ?, status = ?, report = ? WHERE id = ?",
        (time.time(), status, json.dumps(report), run_id),
    )


def _run(r: sqlite3.Row) -> TestRunRow:
    return TestRunRow(
        r["id"],
        r["plugin_key"],
        r["version"],
        r["started_at"],
        r["finished_at"],
        r["status"],
        json.loads(r["report"]),
    )


def test_runs(db: Database, plugin_key: str, limit: int = 50) -> list[TestRunRow]:
    rows = db.read(
        "SELECT * FROM plugin_test_runs WHERE plugin_key = ? ORDER BY started_at DESC LIMIT ?",
        (plugin_key, limit),
    )
    return [_run(r) for r in rows]


def test_run(db: Database, run_id: str) -> TestRunRow | None:
    r = db.read_one("SELECT * FROM plugin_test_runs WHERE id = ?", (run_id,))
    return _run(r) if r else None


async def mark_interrupted_test_runs(db: Database) -> int:
    """Runs left 'running' by a server that died: failed, with the reason."""
    return await db.execute(
        """UPDATE plugin_test_runs SET status = 'failed', finished_at = ?,
             report = '{"ok": false, "error": "interrupted by a server restart"}'
           WHERE status = 'running'""",
        (time.time(),),
    )


def _operator(r: sqlite3.Row) -> OperatorRow:
    return OperatorRow(r["id"], r["name"], r["role"], json.loads(r["properties"]), r["created_at"])


def list_operators(db: Database) -> list[OperatorRow]:
    rows = db.read("SELECT * FROM operators WHERE revoked_at IS NULL ORDER BY created_at")
    return [_operator(r) for r in rows]


def get_operator(db: Database, operator_id: str) -> OperatorRow | None:
    r = db.read_one("SELECT * FROM operators WHERE id = ? AND revoked_at IS NULL", (operator_id,))
    return _operator(r) if r else None


async def revoke_operator(db: Database, operator_id: str) -> int:
    return await db.execute(
        "UPDATE operators SET revoked_at = ? WHERE id = ? AND revoked_at IS NULL",
        (time.time(), operator_id),
    )


# --- cameras and Home Assistant keys ---------------------------------------------------------


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


# --- plugin configuration ----------------------------------------------------------------------


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
