import sqlite3

import pytest
import trio

from pentarun.store import records
from pentarun.store.db import open_database
from pentarun.store.schema import SCHEMA_VERSION


async def test_migrations_apply_once_and_tables_exist(tmp_path):
    path = tmp_path / "db.sqlite"
    async with open_database(path) as db:
        tables = {r["name"] for r in db.read("SELECT name FROM sqlite_master WHERE type='table'")}
    for name in (
        "enhanced_plugins",
        "plugin_property_assignments",
        "plugin_health_checks",
        "plugin_events",
        "plugin_test_runs",
        "plugin_state",
        "audit_log",
    ):
        assert name in tables
    async with open_database(path) as db:  # reopening applies nothing twice
        assert db.read_one("PRAGMA user_version")[0] == SCHEMA_VERSION
        assert db.read_one("PRAGMA journal_mode")[0] == "wal"


async def test_write_is_visible_to_next_read_and_survives_reopen(tmp_path):
    path = tmp_path / "db.sqlite"
    async with open_database(path) as db:
        await records.state_set(db, "p", "prop1", "k", {"n": [1, 2]})
        assert records.state_get(db, "p", "prop1", "k") == (True, {"n": [1, 2]})
        assert records.state_get(db, "p", "prop2", "k") == (False, None)
    async with open_database(path) as db:
        assert records.state_get(db, "p", "prop1", "k") == (True, {"n": [1, 2]})
        await records.state_delete(db, "p", "prop1", "k")
        assert records.state_keys(db, "p", "prop1") == []


async def test_concurrent_writes_group_commit_and_a_failing_job_rolls_back_alone(tmp_path):
    async with open_database(tmp_path / "db.sqlite") as db:

        async def put(i: int) -> None:
            await records.state_set(db, "p", "prop", f"k{i}", i)

        def bad(conn: sqlite3.Connection) -> None:
            conn.execute("INSERT INTO properties (id, name, created_at) VALUES ('x', 'x', 0)")
            raise ValueError("boom")

        async with trio.open_nursery() as nursery:
            for i in range(200):
                nursery.start_soon(put, i)
        with pytest.raises(ValueError):
            await db.write(bad)
        assert len(records.state_keys(db, "p", "prop")) == 200
        assert records.get_property(db, "x") is None


async def test_deferred_writes_are_committed_by_flush(tmp_path):
    async with open_database(tmp_path / "db.sqlite") as db:
        for i in range(50):
            records.record_event(db, "p", "state_changed", state="RUNNING", reason=f"r{i}")
        records.audit(db, "root", "plugin.call", plugin="p", property_id="prop1")
        await db.flush()
        assert len(records.list_events(db, "p")) == 50
        assert records.list_audit(db, plugin="p")[0].type == "plugin.call"


async def test_cancelled_writer_caller_still_commits(tmp_path):
    async with open_database(tmp_path / "db.sqlite") as db:
        with trio.move_on_after(0):
            await records.state_set(db, "p", "prop", "k", 1)
        assert records.state_get(db, "p", "prop", "k") == (True, 1)
