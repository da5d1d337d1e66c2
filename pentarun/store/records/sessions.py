"""Console sign-in sessions (gateway/console): one row per signed-in browser.

Only a sha256 of the session id is stored (the id lives in the operator's cookie), beside the
operator, when the session began, when it was last used, when it ends at the latest and the
secret its CSRF token derives from. A session is only ever read together with a live (not
revoked) operator, so removing an operator ends its sessions at once.
"""

from __future__ import annotations

import json
import time

import msgspec

from ..db import Database
from .operators import OperatorRow


class SessionRow(msgspec.Struct, frozen=True):
    id_hash: str
    operator: OperatorRow
    created_at: float
    last_seen_at: float
    expires_at: float
    csrf_secret: str


async def create_session(
    db: Database,
    id_hash: str,
    operator_id: str,
    *,
    created_at: float,
    expires_at: float,
    csrf_secret: str,
) -> None:
    await db.execute(
        """INSERT INTO console_sessions
           (id_hash, operator_id, created_at, last_seen_at, expires_at, csrf_secret)
           VALUES (?, ?, ?, ?, ?, ?)""",
        (id_hash, operator_id, created_at, created_at, expires_at, csrf_secret),
    )


def session_by_hash(db: Database, id_hash: str) -> SessionRow | None:
    """The session and its operator, if both exist (a removed operator has no sessions)."""
    r = db.read_one(
        """SELECT s.id_hash, s.created_at AS s_created, s.last_seen_at, s.expires_at,
                  s.csrf_secret, o.id, o.name, o.role, o.properties, o.created_at
           FROM console_sessions s JOIN operators o ON o.id = s.operator_id
           WHERE s.id_hash = ? AND o.revoked_at IS NULL""",
        (id_hash,),
    )
    if r is None:
        return None
    operator = OperatorRow(
        r["id"], r["name"], r["role"], json.loads(r["properties"]), r["created_at"]
    )
    return SessionRow(
        r["id_hash"], operator, r["s_created"], r["last_seen_at"], r["expires_at"], r["csrf_secret"]
    )


def touch_session(db: Database, id_hash: str, at: float) -> None:
    """Note a request of the session (a write nobody waits for)."""
    db.defer(
        "UPDATE console_sessions SET last_seen_at = max(last_seen_at, ?) WHERE id_hash = ?",
        (at, id_hash),
    )


async def delete_session(db: Database, id_hash: str) -> int:
    return await db.execute("DELETE FROM console_sessions WHERE id_hash = ?", (id_hash,))


async def delete_stale_sessions(db: Database, idle_s: float, now: float | None = None) -> int:
    """Forget sessions that ended (absolute limit, idle limit) or whose operator was removed."""
    now = time.time() if now is None else now
    return await db.execute(
        """DELETE FROM console_sessions
           WHERE expires_at <= ? OR last_seen_at <= ?
              OR operator_id IN (SELECT id FROM operators WHERE revoked_at IS NOT NULL)""",
        (now, now - idle_s),
    )


def count_sessions(db: Database, operator_id: str) -> int:
    row = db.read_one(
        "SELECT count(*) AS n FROM console_sessions WHERE operator_id = ?", (operator_id,)
    )
    return int(row["n"]) if row else 0
