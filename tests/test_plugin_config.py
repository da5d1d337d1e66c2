"""A plugin's configuration is checked whole: size, shape, schema."""

import msgspec
import pytest
from hypothesis import given
from hypothesis import strategies as st

from pentarun import plugin_config
from pentarun.errors import PayloadTooLarge, Unprocessable

SCHEMA = {
    "type": "object",
    "properties": {"interval": {"type": "integer", "minimum": 1}, "name": {"type": "string"}},
    "additionalProperties": False,
}


def test_a_matching_object_passes_and_every_problem_is_reported():
    assert plugin_config.check({"interval": 5}, SCHEMA, 1000) == {"interval": 5}
    with pytest.raises(Unprocessable) as bad:
        plugin_config.check({"interval": 0, "name": 3, "x": 1}, SCHEMA, 1000)
    paths = sorted(p["path"] for p in bad.value.details["problems"])
    assert paths == ["", "interval", "name"]
    with pytest.raises(Unprocessable) as not_object:
        plugin_config.check([1], plugin_config.DEFAULT_SCHEMA, 1000)
    first = not_object.value.details["problems"][0]
    assert first == {"path": "", "message": "the configuration must be an object"}


def test_problems_are_reported_up_to_a_bound():
    schema = {"type": "object", "additionalProperties": {"type": "string"}}
    with pytest.raises(Unprocessable, match="more than 100") as bad:
        plugin_config.check({f"k{i}": i for i in range(500)}, schema, 10**6)
    assert len(bad.value.details["problems"]) == plugin_config.MAX_PROBLEMS


@given(st.dictionaries(st.text(max_size=8), st.text(max_size=40), max_size=20))
def test_size_is_checked_before_the_schema(config):
    size = len(msgspec.json.encode(config))
    if size > 100:
        with pytest.raises(PayloadTooLarge):
            plugin_config.check(config, {"not": {}}, 100)  # a schema nothing passes
    else:
        with pytest.raises(Unprocessable):
            plugin_config.check(config, {"not": {}}, 100)


def test_the_budget_stays_well_under_an_ipc_frame():
    assert plugin_config.budget(256 * 1024, 8 * 1024 * 1024) == 256 * 1024
    assert plugin_config.budget(64 * 1024 * 1024, 8 * 1024 * 1024) == 1024 * 1024
