import msgspec
from hypothesis import given
from hypothesis import strategies as st

from pentarun.packages.dependencies import (
    degraded_reason,
    dependents_of,
    enable_blockers,
    statuses,
)
from pentarun.packages.manifest import Manifest
from pentarun.store.records import PluginRow

from .factory import definition


def row(key, version="1.0.0", state="ENABLED", reason="", deps=None):
    manifest = msgspec.convert(definition(key=key, dependencies=deps or {}), Manifest)
    return PluginRow(key, key, version, state, reason, "", manifest, 0.0, 0.0)


def test_each_dependency_is_judged_with_its_reason():
    rows = {
        "a": row("a"),
        "b": row("b", "2.1.0"),
        "c": row("c", state="QUARANTINED", reason="crash loop"),
        "d": row("d", state="DISABLED"),
    }
    deps = {"a": ">=1", "b": ">=1,<2", "c": ">=1", "d": ">=1", "e": ">=1"}
    found = {s.plugin: s for s in statuses(deps, rows)}
    assert found["a"].ok and not found["a"].problem
    assert found["b"].problem == "b 2.1.0 is outside the range >=1,<2"
    assert found["c"].problem == "c is QUARANTINED: crash loop"
    assert found["d"].problem == "d is DISABLED"
    assert found["e"].problem == "e is not installed" and found["e"].version is None
    reason = degraded_reason(list(found.values()))
    assert reason.startswith("dependency b 2.1.0") and "e is not installed" in reason
    assert degraded_reason([found["a"]]) == ""


keys = st.sampled_from(["a", "b", "c", "d"])


@given(st.sets(keys), st.dictionaries(keys, st.sets(st.sampled_from(["p1", "p2"]))))
def test_enable_is_blocked_exactly_where_a_dependency_is_not_enabled(deps, assigned):
    blockers = enable_blockers(sorted(deps), assigned, ["p1", "p2"])
    for pid in ("p1", "p2"):
        expected = [d for d in sorted(deps) if pid not in assigned.get(d, set())]
        assert blockers.get(pid, []) == expected


def test_dependents_are_those_that_name_it():
    rows = [row("a"), row("b", deps={"a": ">=1"}), row("c", deps={"b": ">=1"})]
    assert dependents_of("a", rows) == ["b"]
    assert dependents_of("b", rows) == ["c"]
    assert dependents_of("c", rows) == []
