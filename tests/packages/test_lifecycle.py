"""Lifecycle notifications: what is delivered now, kept for the next start, or only recorded."""

from types import SimpleNamespace

import pytest

from pentarun.packages.lifecycle import Lifecycle
from pentarun.store import records
from pentarun.store.db import open_database
from pentarun.supervisor.events import StateChanged
from pentarun.supervisor.policy import Phase


class FakeActor:
    def __init__(self, version: str, phase: Phase = Phase.RUNNING) -> None:
        self.manifest = SimpleNamespace(version=version)
        self.phase = phase
        self.delivered: list[tuple[str, str, dict]] = []

    def deliver(self, event_type, property_id, data):
        self.delivered.append((event_type, property_id, data))
        return True


class FakeDirectory(dict):
    pass


def running(key="cam"):
    return StateChanged(key, Phase.RUNNING.value, "")


@pytest.fixture
async def db(tmp_path):
    async with open_database(tmp_path / "db.sqlite") as db:
        await records.upsert_plugin(db, "cam", name="cam", version="1.0.0", state="ENABLED")
        yield db


async def test_a_running_worker_is_told_at_once_and_every_notice_is_recorded(db):
    actor = FakeActor("1.0.0")
    life = Lifecycle(db, FakeDirectory(cam=actor))
    life.notify("cam", "activated", property_id="p1")
    assert actor.delivered == [
        ("lifecycle.activated", "p1", {"event": "activated", "property": "p1", "detail": {}})
    ]
    await db.flush()
    assert [e.type for e in records.list_events(db, "cam")][-1] == "lifecycle_activated"


async def test_kept_for_the_next_start_and_for_the_version_it_is_about(db):
    directory = FakeDirectory()
    life = Lifecycle(db, directory)
    life.notify("cam", "approved", detail={"version": "2.0.0"}, version="2.0.0")
    life.notify("cam", "deactivated", property_id="p1")  # nobody to tell: recorded only
    old = directory["cam"] = FakeActor("1.0.0")
    life.observe(running())
    assert old.delivered == []  # the approval is for 2.0.0
    new = directory["cam"] = FakeActor("2.0.0")
    life.observe(running())
    events = [e for e, _, _ in new.delivered]
    assert events == ["lifecycle.reloaded", "lifecycle.approved"]
    assert new.delivered[0][2]["detail"] == {"previous": "1.0.0", "version": "2.0.0"}


async def test_only_known_notices(db):
    with pytest.raises(ValueError, match="unknown lifecycle"):
        Lifecycle(db, FakeDirectory()).notify("cam", "exploded")
