"""Install jobs (one per uploaded package) and test runs.

A job's manifest and pending approval are stored as JSON and read back typed (`Manifest`,
`Approval`), decoded once here; the job itself stays a dict for the pipeline driver to convert.
"""

from __future__ import annotations

import json
import sqlite3
import time
from typing import Any

import msgspec

from ...packages.approval import Approval
from ...packages.manifest import Manifest
from ..db import Database


class InstallRow(msgspec.Struct, frozen=True):
    id: str
    plugin_key: str
    version: str
    job: dict[str, Any]
    approval: Approval | None
    package_digest: str
    manifest: Manifest
    file_hashes: dict[str, str]
    active: bool
    last_run_id: str | None
    created_at: float
    updated_at: float
    # site/ as pip installed it (relative to site/); None: installed before it was recorded
    site_hashes: dict[str, str] | None = None


def _install(r: sqlite3.Row) -> InstallRow:
    return InstallRow(
        r["id"],
        r["plugin_key"],
        r["version"],
        json.loads(r["job"]),
        msgspec.json.decode(r["approval"], type=Approval) if r["approval"] else None,
        r["package_digest"],
        msgspec.json.decode(r["manifest"], type=Manifest),
        json.loads(r["file_hashes"]),
        bool(r["active"]),
        r["last_run_id"],
        r["created_at"],
        r["updated_at"],
        json.loads(r["site_hashes"]) if r["site_hashes"] is not None else None,
    )


async def create_install(
    db: Database,
    install_id: str,
    *,
    plugin_key: str,
    version: str,
    job: dict[str, Any],
    package_digest: str,
    manifest: Manifest,
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
            msgspec.json.encode(manifest).decode(),
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


async def set_install_approval(db: Database, install_id: str, approval: Approval) -> None:
    await db.execute(
        "UPDATE plugin_installs SET approval = ?, updated_at = ? WHERE id = ?",
        (msgspec.json.encode(approval).decode(), time.time(), install_id),
    )


async def set_install_site_hashes(db: Database, install_id: str, hashes: dict[str, str]) -> None:
    await db.execute(
        "UPDATE plugin_installs SET site_hashes = ?, updated_at = ? WHERE id = ?",
        (json.dumps(hashes), time.time(), install_id),
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


def active_installs(db: Database) -> list[InstallRow]:
    """One row per installed plugin at most (the unique index on active rows)."""
    return [_install(r) for r in db.read("SELECT * FROM plugin_installs WHERE active = 1")]


def all_installs(db: Database) -> list[InstallRow]:
    return [_install(r) for r in db.read("SELECT * FROM plugin_installs ORDER BY created_at")]


async def activate_install(db: Database, plugin_key: str, install_id: str) -> None:
    """Make one install the plugin's active version, in one transaction."""

    def swap(conn: sqlite3.Connection) -> None:
        conn.execute("UPDATE plugin_installs SET active = 0 WHERE plugin_key = ?", (plugin_key,))
        conn.execute("UPDATE plugin_installs SET active = 1 WHERE id = ?", (install_id,))

    await db.write(swap)


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
    db.notify("test_run", {"plugin": plugin_key, "run_id": run_id, "status": "running"})


async def finish_test_run(db: Database, run_id: str, status: str, report: dict[str, Any]) -> None:
    await db.execute(
        "UPDATE plugin_test_runs SET finished_at = ?, status = ?, report = ? WHERE id = ?",
        (time.time(), status, json.dumps(report), run_id),
    )
    row = db.read_one("SELECT plugin_key FROM plugin_test_runs WHERE id = ?", (run_id,))
    if row is not None:  # observers (the console's live pages) hear that a run ended
        db.notify("test_run", {"plugin": row["plugin_key"], "run_id": run_id, "status": status})


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


def test_runs(
    db: Database, plugin_key: str, limit: int = 50, before: float | None = None
) -> list[TestRunRow]:
    """The newest `limit` test runs of a plugin, started before time `before` if given."""
    rows = db.read(
        """SELECT * FROM plugin_test_runs WHERE plugin_key = ? AND started_at < ?
           ORDER BY started_at DESC LIMIT ?""",
        (plugin_key, float("inf") if before is None else before, limit),
    )
    return [_run(r) for r in rows]


def test_run(db: Database, run_id: str) -> TestRunRow | None:
    r = db.read_one("SELECT * FROM plugin_test_runs WHERE id = ?", (run_id,))
    return _run(r) if r else None


async def mark_interrupted_test_runs(db: Database) -> int:
    """Runs left running or queued by a server that died: failed, with the reason."""
    return await db.execute(
        """UPDATE plugin_test_runs SET status = 'failed', finished_at = ?,
             report = '{"ok": false, "error": "interrupted by a server restart"}'
           WHERE status IN ('running', 'queued')""",
        (time.time(),),
    )


async def set_test_run_status(db: Database, run_id: str, status: str) -> None:
    """`queued` while a run waits for a place among the suites, then `running`."""
    await db.execute(
        "UPDATE plugin_test_runs SET status = ? WHERE id = ? AND finished_at IS NULL",
        (status, run_id),
    )
