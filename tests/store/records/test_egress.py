"""The egress records: grants replaced whole, refusals counted, both gone with the plugin."""

from pentarun.store import records
from pentarun.store.db import open_database


async def test_grants_and_refusals_live_and_die_with_the_plugin(tmp_path):
    async with open_database(tmp_path / "db.sqlite") as db:
        assert records.get_egress(db, "cam").hosts == []
        records.count_egress_refusals(db, "cam", 2)  # an unknown plugin: nothing, no error
        await db.flush()
        assert records.get_egress(db, "cam").refusals == 0
        await records.upsert_plugin(db, "cam", name="Cam", version="1.0.0", state="ENABLED")
        await records.set_egress_grants(db, "cam", ["10.0.0.0/24", "nvr.lan:554"], "operator:a")
        records.count_egress_refusals(db, "cam", 2)
        records.count_egress_refusals(db, "cam")
        await db.flush()
        row = records.get_egress(db, "cam")
        assert row.hosts == ["10.0.0.0/24", "nvr.lan:554"] and row.updated_by == "operator:a"
        assert row.refusals == 3 and row.last_refused_at is not None
        await records.set_egress_grants(db, "cam", [], "operator:b")
        assert (
            records.egress_grants(db, "cam") == [] and records.get_egress(db, "cam").refusals == 3
        )
        await records.upsert_plugin(db, "cam", name="Cam", version="1.1.0", state="ENABLED")
        assert records.get_egress(db, "cam").updated_by == "operator:b"  # an upgrade keeps it
        await records.delete_plugin(db, "cam")
        assert records.get_egress(db, "cam").refusals == 0  # uninstalled: forgotten
