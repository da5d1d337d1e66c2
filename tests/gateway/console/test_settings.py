"""The console's settings (`[console]`) and its sessions table."""

import time

import pytest

from pentarun.config import load_config
from pentarun.errors import BadRequest
from pentarun.security.operators import create
from pentarun.store import records
from pentarun.store.db import open_database


def test_sessions_end_after_an_hour_idle_and_twelve_hours_at_most():
    console = load_config(environ={}).console
    assert (console.session_idle_s, console.session_absolute_s) == (3600, 12 * 3600)
    assert console.public_url == "" and console.signin_failures == 10
    env = {
        "PENTARUN_CONSOLE__SESSION_IDLE_S": "600",
        "PENTARUN_CONSOLE__PUBLIC_URL": "https://pv.example",
    }
    changed = load_config(environ=env).console
    assert changed.session_idle_s == 600 and changed.public_url == "https://pv.example"


@pytest.mark.parametrize(
    "values",
    [
        {"session_idle_s": 10},  # below a minute
        {"session_absolute_s": 30 * 24 * 3600},  # above a week
        {"session_idle_s": 7200, "session_absolute_s": 3600},  # idle longer than the whole
        {"public_url": "javascript:alert(1)"},
        {"signin_failures": 0},
        {"cookie": "x"},
    ],
)
def test_unsafe_session_settings_are_refused(values):
    with pytest.raises(BadRequest):
        load_config(environ={}, console=values)


async def test_a_session_is_read_with_a_live_operator_only(tmp_path):
    async with open_database(tmp_path / "db.sqlite") as db:
        operator, _ = await create(db, "ann", "admin", [])
        now = time.time()
        await records.create_session(
            db, "h1", operator.id, created_at=now, expires_at=now + 60, csrf_secret="s"
        )
        row = records.session_by_hash(db, "h1")
        assert row is not None and row.operator == operator and row.csrf_secret == "s"
        records.touch_session(db, "h1", now + 5)
        records.touch_session(db, "h1", now + 1)  # never moves back
        await db.flush()
        assert records.session_by_hash(db, "h1").last_seen_at == now + 5
        assert await records.delete_stale_sessions(db, idle_s=3600, now=now + 10) == 0
        await records.revoke_operator(db, operator.id)
        assert records.session_by_hash(db, "h1") is None
        assert await records.delete_stale_sessions(db, idle_s=3600, now=now + 10) == 1
        assert records.count_sessions(db, operator.id) == 0
