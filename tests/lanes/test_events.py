"""The event lane: who receives a published event, and which types exist."""

import pytest

from pentarun.errors import BadRequest
from pentarun.lanes.events import EventLane
from pentarun.packages.manifest import Events
from pentarun.supervisor.directory import Directory


class FakeActor:
    def __init__(self, key, subscribe=(), properties=("pa",)):
        self.key = key
        self.manifest = type("M", (), {"events": Events(subscribe=list(subscribe))})()
        self.properties = set(properties)
        self.delivered: list[tuple[str, str, dict]] = []

    def serves(self, property_id):
        return property_id in self.properties

    def deliver(self, event_type, property_id, data):
        self.delivered.append((event_type, property_id, data))
        return 1


def lane(*actors):
    directory = Directory()
    for actor in actors:
        directory.add(actor)
    fed: list[dict] = []
    return EventLane(directory, fed.append), fed


def test_subscribers_of_the_property_receive_it_and_the_feed_mirrors_it():
    listener, other = FakeActor("a", ["camera.motion"]), FakeActor("b", ["camera.motion"], ["pb"])
    events, fed = lane(listener, other, FakeActor("c"))
    assert events.publish("camera.motion", "pa", {"x": 1}, source="operator:root") == 1
    assert listener.delivered == [("camera.motion", "pa", {"x": 1})] and other.delivered == []
    [item] = fed
    assert (item["type"], item["delivered"], item["source"]) == (
        "event.camera.motion",
        1,
        "operator:root",
    )


@pytest.mark.parametrize(
    "bad", ["camera.motion\n", "camera", "Camera.motion", "camera.motion.", "x" * 500 + "\n"]
)
def test_an_event_type_must_match_whole(bad):
    subscriber = FakeActor("a", ["camera.motion"])
    events, fed = lane(subscriber)
    with pytest.raises(BadRequest) as info:
        events.publish(bad, "pa", {}, source="plugin:z")
    assert len(info.value.details["type"]) <= 64
    assert subscriber.delivered == [] and fed == []
