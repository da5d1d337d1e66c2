import json

from hypothesis import given
from hypothesis import strategies as st

from pentarun.sandbox.profile import UID_SPAN, plugin_uid
from pentarun.sandbox.uids import UidTable, assign

BASE = 200_000
KEYS = st.lists(st.from_regex(r"[a-z][a-z0-9-]{0,20}", fullmatch=True), unique=True, max_size=40)


@given(KEYS)
def test_every_plugin_gets_its_own_uid_in_the_span(keys):
    taken: dict[str, int] = {}
    for key in keys:
        taken[key] = assign(taken, key, BASE)
    assert len(set(taken.values())) == len(taken)
    assert all(BASE <= uid < BASE + UID_SPAN for uid in taken.values())


def test_a_collision_moves_to_the_next_free_uid_and_a_held_uid_stays():
    first = plugin_uid("alpha", BASE)
    taken = {"squatter": first}
    assert assign(taken, "alpha", BASE) == BASE + (first - BASE + 1) % UID_SPAN
    assert assign(taken, "squatter", BASE) == first


def test_assignments_survive_a_restart_and_stay_private(tmp_path):
    path = tmp_path / "sandbox-uids.json"
    table = UidTable(path, BASE)
    uid = table.uid_of("cam")
    assert UidTable(path, BASE).uid_of("cam") == uid  # read back, not recomputed
    assert json.loads(path.read_text()) == {"cam": uid}
    assert path.stat().st_mode & 0o777 == 0o600
    path.write_text(json.dumps({"cam": 5}))  # out of the span (a changed base): reassigned
    assert UidTable(path, BASE).uid_of("cam") == plugin_uid("cam", BASE)
