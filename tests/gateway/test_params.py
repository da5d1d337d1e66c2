"""Path and query parameters: checked before the store, bad ones named."""

import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pentarun.errors import BadRequest, NotFound
from pentarun.gateway import params
from pentarun.lanes.calls import EVENT_TYPE_PATTERN
from pentarun.packages.manifest import KEY


@given(st.text(max_size=80))
def test_a_path_key_is_accepted_exactly_when_the_manifest_would_accept_it(text):
    manifest_ok = KEY.fullmatch(text) is not None
    try:
        assert params.plugin_key(text) == text
        assert manifest_ok
    except NotFound:
        assert not manifest_ok


def test_ids_in_use_today_stay_valid_and_odd_ones_are_404():
    for pid in ("p1", "p2", "pb", "demo", "front-door", "cam-c", "P1", "site_2", "a.b", "x"):
        assert params.resource_id(pid, "property") == pid
    for bad in ("", "-x", ".x", "p1\n", "a/b", "a b", "x" * 65, "é"):
        with pytest.raises(NotFound):
            params.resource_id(bad, "property")
    assert params.token_id("0123456789abcdef0123456789abcdef", "operator")
    with pytest.raises(NotFound):
        params.token_id("x" * 65, "operator")


def test_query_limits_are_bounded_and_named():
    assert params.limit({}, 50) == 50
    assert params.limit({"limit": "1000"}, 50) == 1000
    for bad in ("0", "1001", "-1", "ten", "1.5", "", "٣", "9" * 30):
        with pytest.raises(BadRequest) as refused:
            params.limit({"limit": bad}, 50)
        assert refused.value.details["parameter"] == "limit"


@given(st.text(max_size=30))
def test_since_is_a_finite_non_negative_number_or_a_named_400(text):
    try:
        value = params.query_float({"since": text}, "since")
    except BadRequest as exc:
        assert exc.details["parameter"] == "since"
    else:
        assert value is not None and 0 <= value < float("inf")


def test_text_filters_must_match_their_pattern():
    assert params.query_plugin({"plugin": "demo"}) == "demo"
    assert params.query_plugin({}) is None
    with pytest.raises(BadRequest, match="'plugin'"):
        params.query_plugin({"plugin": "Demo!"})
    assert params.query_match({"type": "plugin.rejected"}, "type", params.AUDIT_TYPE)
    with pytest.raises(BadRequest, match="'type'"):
        params.query_match({"type": "x" * 100}, "type", params.AUDIT_TYPE)


def test_struct_patterns_refuse_a_trailing_newline():
    for pattern in (params.KEY_PATTERN, params.ID_PATTERN, EVENT_TYPE_PATTERN):
        assert re.search(pattern, "ab.cd\n") is None
