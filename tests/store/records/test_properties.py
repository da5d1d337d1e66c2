"""Properties and cameras: duplicates are conflicts decided by the key, lists are pages."""

import pytest

from pentarun.errors import Conflict, NotFound
from pentarun.store import records
from pentarun.store.db import open_database


async def test_duplicates_conflict_and_lists_are_pages(tmp_path):
    async with open_database(tmp_path / "db.sqlite") as db:
        for pid in ("p3", "p1", "p2"):
            await records.create_property(db, pid, pid.upper())
        with pytest.raises(Conflict):
            await records.create_property(db, "p1", "again")
        assert [p.id for p in records.list_properties(db, limit=2)] == ["p1", "p2"]
        assert [p.id for p in records.list_properties(db, after="p2")] == ["p3"]
        assert [p.id for p in records.list_properties(db, only=["p3", "zz"])] == ["p3"]
        await records.create_camera(db, "p1", "front", name="Front", source={"kind": "demo"})
        await records.create_camera(db, "p1", "back", name="Back", source={"kind": "demo"})
        with pytest.raises(Conflict):
            await records.create_camera(db, "p1", "front", name="x", source={"kind": "demo"})
        with pytest.raises(NotFound):
            await records.create_camera(db, "nope", "front", name="x", source={"kind": "demo"})
        assert [c.id for c in records.cameras_of(db, "p1", limit=1)] == ["back"]
        assert [c.id for c in records.cameras_of(db, "p1", after="back")] == ["front"]


async def test_ha_keys_come_in_pages_by_creation(tmp_path):
    async with open_database(tmp_path / "db.sqlite") as db:
        await records.create_property(db, "p1", "One")
        for i in range(3):
            await records.create_ha_key(db, f"k{i}", "p1", f"hash{i}", f"key {i}")
        await records.revoke_ha_key(db, "k1")
        assert [k.id for k in records.ha_keys_of(db, "p1")] == ["k0", "k2"]
        assert [k.id for k in records.ha_keys_of(db, "p1", limit=1)] == ["k0"]
        assert [k.id for k in records.ha_keys_of(db, "p1", after="k0")] == ["k2"]
