import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule

from pentarun.errors import WorkerUnavailable
from pentarun.supervisor.directory import Directory, Role

KEYS = st.sampled_from(["a", "b"])


class FakeActor:
    def __init__(self, key: str, properties: set[str]) -> None:
        self.key = key
        self.properties = properties

    def serves(self, property_id: str) -> bool:
        return property_id in self.properties


def test_actors_by_key_and_by_property():
    directory = Directory()
    b, a = FakeActor("b", {"p1"}), FakeActor("a", {"p1", "p2"})
    directory.add(b)  # type: ignore[arg-type]
    directory.add(a)  # type: ignore[arg-type]
    assert directory.get("a") is a and "b" in directory and len(directory) == 2
    assert directory.serving("p1") == [a, b]  # by key
    assert directory.serving("p2") == [a]
    assert list(directory) == [a, b]
    with pytest.raises(ValueError):
        directory.add(FakeActor("a", set()))  # type: ignore[arg-type]
    assert directory.remove("a") is a and directory.get("a") is None


def test_require_names_the_plugin_and_its_state():
    with pytest.raises(WorkerUnavailable) as info:
        Directory().require("cam", "VERIFIED")
    assert "cam" in info.value.message and info.value.details["state"] == "VERIFIED"


# --- hand over: successors and draining actors ----------------------------------------------


def test_a_successor_is_not_routed_until_promoted_and_the_old_one_drains():
    directory = Directory()
    old, new = FakeActor("a", {"p1"}), FakeActor("a", {"p1"})
    directory.add(old)  # type: ignore[arg-type]
    directory.add_successor(new)  # type: ignore[arg-type]
    assert directory.get("a") is old and directory.serving("p1") == [old]
    assert directory.actors_of("a") == [old, new] and len(directory) == 1
    assert directory.role(new) is Role.SUCCESSOR  # type: ignore[arg-type]
    assert directory.promote(new) is old  # type: ignore[arg-type]
    assert directory.get("a") is new and directory.role(old) is Role.DRAINING  # type: ignore[arg-type]
    assert list(directory) == [new] and directory.everyone() == [new, old]
    assert directory.drop(old) is Role.DRAINING  # type: ignore[arg-type]
    assert directory.everyone() == [new] and directory.drop(old) is None  # type: ignore[arg-type]


def test_one_successor_at_a_time_and_only_it_is_promoted():
    directory = Directory()
    old, new, other = FakeActor("a", set()), FakeActor("a", set()), FakeActor("a", set())
    directory.add(old)  # type: ignore[arg-type]
    directory.add_successor(new)  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        directory.add_successor(other)  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        directory.promote(other)  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        directory.add_successor(old)  # type: ignore[arg-type]  # already routed


class DirectoryRoles(RuleBasedStateMachine):
    """Hand overs, retirements and removals in any order on two plugins, against a model."""

    def __init__(self) -> None:
        super().__init__()
        self.directory = Directory()
        self.routed: dict[str, FakeActor] = {}
        self.successors: dict[str, FakeActor] = {}
        self.draining: dict[str, list[FakeActor]] = {"a": [], "b": []}

    @rule(key=KEYS)
    def add(self, key):
        actor = FakeActor(key, {"p1"})
        if key in self.routed:
            with pytest.raises(ValueError):
                self.directory.add(actor)  # type: ignore[arg-type]
            return
        self.directory.add(actor)  # type: ignore[arg-type]
        self.routed[key] = actor

    @rule(key=KEYS)
    def succeed(self, key):
        actor = FakeActor(key, {"p1"})
        if key in self.successors:
            with pytest.raises(ValueError):
                self.directory.add_successor(actor)  # type: ignore[arg-type]
            return
        self.directory.add_successor(actor)  # type: ignore[arg-type]
        self.successors[key] = actor

    @rule(key=KEYS)
    def promote(self, key):
        actor = self.successors.pop(key, None)
        if actor is None:
            return
        previous = self.directory.promote(actor)  # type: ignore[arg-type]
        assert previous is self.routed.get(key)
        if previous is not None:
            self.draining[key].append(previous)
        self.routed[key] = actor

    @rule(key=KEYS, data=st.data())
    def drop_any(self, key, data):
        known = self.directory.actors_of(key)
        if not known:
            return
        actor = data.draw(st.sampled_from(known))
        role = self.directory.drop(actor)
        if self.routed.get(key) is actor:
            assert role is Role.ROUTED
            del self.routed[key]
        elif self.successors.get(key) is actor:
            assert role is Role.SUCCESSOR
            del self.successors[key]
        else:
            assert role is Role.DRAINING
            self.draining[key].remove(actor)

    @invariant()
    def matches_the_model(self):
        for key in ("a", "b"):
            assert self.directory.get(key) is self.routed.get(key)
            expected = [a for a in (self.routed.get(key), self.successors.get(key)) if a]
            assert self.directory.actors_of(key) == expected + self.draining[key]
            assert self.directory.successor(key) is self.successors.get(key)
        # one role per actor; only routed actors are listed, served and counted
        everyone = self.directory.everyone()
        assert len({id(a) for a in everyone}) == len(everyone)
        assert list(self.directory) == [self.routed[k] for k in sorted(self.routed)]
        assert self.directory.serving("p1") == list(self.directory)
        assert len(self.directory) == len(self.routed)


TestDirectoryRoles = DirectoryRoles.TestCase
TestDirectoryRoles.settings = settings(max_examples=200, stateful_step_count=30, deadline=None)
