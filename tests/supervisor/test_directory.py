import pytest

from pentarun.errors import WorkerUnavailable
from pentarun.supervisor.directory import Directory


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
