"""Operators and the audit log."""

from __future__ import annotations

import json
import sqlite3
import time
from typing import Any

import msgspec

from ..db import Database


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
