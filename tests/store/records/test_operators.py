"""Operators and the audit log: pages that do bounded work however rare a filter's matches."""

from pentarun.store import records
from pentarun.store.db import open_database


async def test_operators_come_in_pages_by_creation(tmp_path):
    async with open_database(tmp_path / "db.sqlite") as db:
        for i in range(5):
            await records.create_operator(
                db, f"id{i}", name=f"op{i}", role="viewer", token_hash=f"h{i}", properties=[]
            )
        first = records.list_operators(db, limit=2)
        assert [o.name for o in first] == ["op0", "op1"]
        rest = records.list_operators(db, after=first[-1].id, limit=10)
        assert [o.name for o in rest] == ["op2", "op3", "op4"]


async def test_an_audit_page_looks_at_a_bounded_window_and_says_where_to_go_on(tmp_path):
    async with open_database(tmp_path / "db.sqlite") as db:
        records.audit(db, "operator:root", "rare.thing", plugin="demo")
        for i in range(250):
            records.audit(db, "operator:root", "common.thing", property_id=f"p{i % 3}")
        await db.flush()
        first = records.audit_page(db, type_="rare.thing", scan=100)
        assert first.rows == [] and first.next_before is not None
        found, cursor, pages = [], first.next_before, 1
        while cursor is not None:
            page = records.audit_page(db, type_="rare.thing", before=cursor, scan=100)
            found += page.rows
            cursor, pages = page.next_before, pages + 1
        assert [r.plugin for r in found] == ["demo"] and pages == 3
        newest = records.audit_page(db, property_id="p1", limit=5, scan=100)
        assert len(newest.rows) == 5 and {r.property for r in newest.rows} == {"p1"}
        assert newest.next_before == newest.rows[-1].id
        assert records.audit_page(db, since=10**10).next_before is None


async def test_the_filtered_audit_query_walks_the_id_range(tmp_path):
    async with open_database(tmp_path / "db.sqlite") as db:
        plan = db.read(
            """EXPLAIN QUERY PLAN SELECT * FROM audit_log WHERE id >= ? AND id < ?
               AND plugin = ? AND +at >= ? ORDER BY id DESC LIMIT ?""",
            (1, 100, "x", 0.0, 10),
        )
        details = " ".join(r["detail"] for r in plan)
        assert "INTEGER PRIMARY KEY" in details and "audit_log_by_time" not in details
