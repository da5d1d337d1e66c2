"""Hooks: a failing plugin is skipped and recorded, with its own text clipped."""

import pytest

from pentarun.errors import RemoteError
from pentarun.ipc.messages import Reply
from pentarun.lanes.hooks import HookLane
from pentarun.packages.manifest import Hook
from pentarun.store import records
from pentarun.store.db import open_database
from pentarun.supervisor.directory import Directory


class HookActor:
    def __init__(self, key, answer, priority=0):
        self.key = key
        self.manifest = type("M", (), {"hooks": {"snapshot.annotate": Hook(priority, 500)}})()
        self.answer = answer

    def serves(self, property_id):
        return True

    async def call(self, handler, property_id, params, deadline_s=None):
        if isinstance(self.answer, Exception):
            raise self.answer
        return Reply(0, self.answer)


@pytest.fixture
async def db(tmp_path):
    async with open_database(tmp_path / "db.sqlite") as database:
        yield database


async def test_a_failing_hooks_own_text_is_clipped_in_its_event(db):
    directory = Directory()
    loud = RemoteError("E" * 10_000, "m" * 1_000_000, 500)
    directory.add(HookActor("loud", loud, priority=2))
    directory.add(HookActor("fine", {"jpeg": b"new"}, priority=1))
    payload = await HookLane(db, directory).run("snapshot.annotate", "pa", {"jpeg": b"old"})
    assert payload == {"jpeg": b"new"}  # the failing plugin is skipped, the next one runs
    await db.flush()
    [event] = records.list_events(db, "loud")
    assert event.type == "hook_failed" and event.reason.startswith("snapshot.annotate: EEE")
    assert len(event.reason) < 300
