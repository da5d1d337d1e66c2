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


AUDIT_SCAN = 5000  # audit rows one page looks at, at most (a page is a window of the log)


class AuditPage(msgspec.Struct, frozen=True):
    rows: list[AuditRow]
    next_before: int | None  # pass as `before` for the next (older) page; None: the log's start


def audit_page(
    db: Database,
    *,
    plugin: str | None = None,
    property_id: str | None = None,
    type_: str | None = None,
    since: float | None = None,
    before: int | None = None,
    limit: int = 500,
    scan: int = AUDIT_SCAN,
) -> AuditPage:
    """The newest audit rows matching the filters, among at most `scan` rows older than
    `before` (by id): bounded work however rare the filters' matches are (no filter column is
    indexed). Follow `next_before` for older matches."""
    window_end = "id < ?" if before is not None else "1"
    window: tuple[Any, ...] = (before,) if before is not None else ()
    edge = db.read_one(
        f"""SELECT min(id) AS oldest, min(at) AS oldest_at, count(*) AS n FROM
            (SELECT id, at FROM audit_log WHERE {window_end} ORDER BY id DESC LIMIT ?)""",
        (*window, scan),
    )
    if edge is None or not edge["n"]:
        return AuditPage([], None)
    clauses = ["id >= ?"] + ([window_end] if before is not None else [])
    params: list[Any] = [edge["oldest"], *window]
    for column, value in (("plugin", plugin), ("property", property_id), ("type", type_)):
        if value is not None:
            clauses.append(f"{column} = ?")
            params.append(value)
    if since is not None:
        clauses.append("+at >= ?")  # `+`: walk the id range, never the time index
        params.append(since)
    rows = db.read(
        f"SELECT * FROM audit_log WHERE {' AND '.join(clauses)} ORDER BY id DESC LIMIT ?",
        (*params, limit),
    )
    page = [
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
    if len(page) == limit:
        next_before: int | None = page[-1].id
    elif edge["n"] < scan or (since is not None and edge["oldest_at"] < since):
        next_before = None  # the log's start, or older than `since`
    else:
        next_before = edge["oldest"]
    return AuditPage(page, next_before)


def list_audit(
    db: Database,
    *,
    plugin: str | None = None,
    property_id: str | None = None,
    type_: str | None = None,
    since: float | None = None,
    limit: int = 500,
) -> list[AuditRow]:
    """The newest matching rows among the last AUDIT_SCAN (see `audit_page`)."""
    return audit_page(
        db, plugin=plugin, property_id=property_id, type_=type_, since=since, limit=limit
    ).rows


def _operator(r: sqlite3.Row) -> OperatorRow:
    return OperatorRow(r["id"], r["name"], r["role"], json.loads(r["properties"]), r["created_at"])


def list_operators(db: Database, *, after: str = "", limit: int = 1000) -> list[OperatorRow]:
    """Operators by creation, at most `limit`, those created after operator `after` if given."""
    if not after:
        rows = db.read(
            "SELECT * FROM operators WHERE revoked_at IS NULL ORDER BY created_at, id LIMIT ?",
            (limit,),
        )
    else:
        rows = db.read(
            """SELECT * FROM operators WHERE revoked_at IS NULL
                 AND (created_at, id) > (SELECT created_at, id FROM operators WHERE id = ?)
               ORDER BY created_at, id LIMIT ?""",
            (after, limit),
        )
    return [_operator(r) for r in rows]


def get_operator(db: Database, operator_id: str) -> OperatorRow | None:
    r = db.read_one("SELECT * FROM operators WHERE id = ? AND revoked_at IS NULL", (operator_id,))
    return _operator(r) if r else None


async def revoke_operator(db: Database, operator_id: str) -> int:
    return await db.execute(
        "UPDATE operators SET revoked_at = ? WHERE id = ? AND revoked_at IS NULL",
        (time.time(), operator_id),
    )
