"""The core calls' contract: typed params, unknown ones refused by name, refusal risk. Pure."""

import math
import re
import subprocess
import sys

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pentarun.errors import BadRequest
from pentarun.lanes.calls import (
    CONTRACTS,
    EVENT_TYPE,
    EVENT_TYPE_PATTERN,
    FIXED_RISK,
    MAX_KEYS_PAGE,
    MAX_STATE_KEY,
    MAX_STATE_VALUE,
    CameraParams,
    EventsPublishParams,
    NoParams,
    Refusal,
    StoreKeysParams,
    StoreSetParams,
    StreamsTokenParams,
    audit_type,
    decode_params,
    foreign_property,
    refusal_risk,
)
from pentarun.security.limits import MAX_STREAM_TTL_S
from pentarun.security.scopes import SCOPES

# one valid set of params per core call, and what it must decode into
SAMPLES = {
    "store.get": {"key": "k"},
    "store.set": {"key": "k", "value": {"n": [1, 2]}},
    "store.delete": {"key": "k"},
    "store.keys": {},
    "properties.get": {},
    "cameras.list": {},
    "cameras.get": {"camera": "front"},
    "cameras.snapshot": {"camera": "front"},
    "cameras.frame": {"camera": "front", "after": 3},
    "streams.token": {"camera": "front", "stream": "main", "protocol": "mjpeg", "ttl_s": 60},
    "streams.verify": {"token": "t.o.k", "camera": "front"},
    "events.publish": {"type": "camera.tamper", "data": {"by": "x"}},
    "plugins.call": {"plugin": "nvr", "handler": "nvr.clips", "params": {"n": 1}, "deadline_ms": 5},
    "storage.put": {"name": "clips/a.json", "data": b"{}"},
    "storage.get": {"name": "clips/a.json"},
    "storage.list": {"after": "clips/", "limit": 10},
    "storage.delete": {"name": "clips/a.json"},
    "recordings.list": {"camera": "front", "after": "1700000000000-0a0b0c0d", "limit": 10},
    "recordings.get": {"id": "1700000000000-0a0b0c0d", "offset": 0, "length": 1024},
    "recordings.start": {"camera": "front", "duration_s": 10},
    "recordings.stop": {"camera": "front"},
}


def decode(name, params):
    return decode_params(name, CONTRACTS[name], params)


def test_every_call_has_a_sample():
    assert set(SAMPLES) == set(CONTRACTS)


@pytest.mark.parametrize("name", sorted(CONTRACTS))
def test_every_call_accepts_its_params(name):
    params = decode(name, SAMPLES[name])
    assert isinstance(params, CONTRACTS[name].params)
    assert set(SAMPLES[name]) <= set(CONTRACTS[name].accepts)


def test_decoded_params_are_typed():
    assert decode("cameras.get", {"camera": "front"}) == CameraParams(camera="front")
    token = decode("streams.token", {"camera": "c", "ttl_s": 5})
    assert token == StreamsTokenParams(camera="c", ttl_s=5.0)
    assert (token.stream, token.protocol) == (None, None)
    event = decode("events.publish", {"type": "camera.motion"})
    assert event == EventsPublishParams(event_type="camera.motion", data={})
    assert decode("store.set", {"key": "k", "value": None}) == StoreSetParams(key="k", value=None)
    assert decode("streams.token", {"camera": "c", "stream": None, "ttl_s": None}).ttl_s is None


@pytest.mark.parametrize("name", sorted(CONTRACTS))
def test_every_call_refuses_an_unknown_parameter_by_name(name):
    with pytest.raises(BadRequest) as info:
        decode(name, {**SAMPLES[name], "bogus": 1})
    error = info.value
    assert error.status == 400 and error.details["reason"] == "unknown_parameter"
    assert error.details["parameters"] == ["bogus"]
    assert "'bogus'" in error.message and name in error.message
    accepts = CONTRACTS[name].accepts
    assert error.details["accepted"] == list(accepts)
    if accepts:
        assert all(f"'{p}'" in error.message for p in accepts)
    else:
        assert "takes none" in error.message


def test_a_property_parameter_is_refused_and_named():
    with pytest.raises(BadRequest) as info:
        decode("cameras.list", {"property": "pb"})
    assert info.value.message == (
        "core call 'cameras.list' does not take the parameter 'property' (it takes none)"
    )
    with pytest.raises(BadRequest) as info:
        decode("cameras.get", {"camera": "c", "property_id": "pb", "zz": 1})
    assert info.value.details["parameters"] == ["property_id", "zz"]
    assert "(it takes 'camera')" in info.value.message


def test_unknown_names_are_bounded_in_the_message():
    many = {f"p{i}" + "x" * 500: 1 for i in range(50)}
    with pytest.raises(BadRequest) as info:
        decode("store.keys", many)
    assert len(info.value.message) < 1200
    assert "and 42 more" in info.value.message
    assert len(info.value.details["parameters"]) == 8


def test_a_huge_map_of_unknown_parameters_is_refused_naming_a_few():
    with pytest.raises(BadRequest) as info:
        decode("cameras.get", {f"k{i}": i for i in range(100_000)})
    assert info.value.details["parameters"] == [f"k{i}" for i in range(8)]
    assert info.value.message.endswith("and 99992 more (it takes 'camera')")


def test_a_deeply_nested_property_value_is_shown_bounded():
    deep = []
    for _ in range(100_000):
        deep = [deep]
    shown = foreign_property({"property": deep}, "pa")
    assert shown is not None and len(shown) <= 200
    with pytest.raises(BadRequest):
        decode("cameras.list", {"property": deep})


def test_foreign_property_names_only_another_property():
    assert foreign_property({"property": "pb"}, "pa") == "pb"
    assert foreign_property({"property_id": "pb"}, "pa") == "pb"
    assert foreign_property({"property": ["pb"]}, "pa") == "['pb']"
    assert foreign_property({"property": "pa"}, "pa") is None
    assert foreign_property({"property": None, "camera": "pb"}, "pa") is None
    assert foreign_property({}, "pa") is None
    assert len(foreign_property({"property": "p" * 10_000}, "pa")) == 200


@pytest.mark.parametrize(
    ("name", "params"),
    [
        ("store.get", {"key": ""}),
        ("store.get", {"key": "k" * (MAX_STATE_KEY + 1)}),
        ("store.get", {"key": 7}),
        ("store.get", {}),
        ("store.set", {"key": "k"}),
        ("store.set", {"key": "k", "value": "v" * MAX_STATE_VALUE}),
        ("cameras.get", {"camera": ""}),
        ("cameras.get", {"camera": "c" * 65}),
        ("cameras.snapshot", {"camera": ["c"]}),
        ("streams.token", {"camera": "c", "ttl_s": 0}),
        ("streams.token", {"camera": "c", "ttl_s": -1}),
        ("streams.token", {"camera": "c", "ttl_s": MAX_STREAM_TTL_S + 1}),
        ("streams.token", {"camera": "c", "ttl_s": True}),
        ("streams.token", {"camera": "c", "ttl_s": math.nan}),
        ("streams.token", {"camera": "c", "ttl_s": "60"}),
        ("streams.token", {"camera": "c", "stream": "s" * 65}),
        ("streams.verify", {"token": "t" * 5000}),
        ("events.publish", {"data": {}}),
        ("events.publish", {"type": "camera.motion", "data": []}),
        ("events.publish", {"type": "camera.motion", "data": {"x": "y" * 70_000}}),
        ("events.publish", {"type": "e" * 129}),
    ],
)
def test_out_of_bounds_or_mistyped_params_are_bad_requests(name, params):
    with pytest.raises(BadRequest) as info:
        decode(name, params)
    assert info.value.details["reason"] == "invalid_parameter"
    assert name in info.value.message


def test_a_deeply_nested_value_is_a_bad_request():
    deep = []
    for _ in range(100_000):
        deep = [deep]
    with pytest.raises(BadRequest):
        decode("store.set", {"key": "k", "value": deep})


def test_largest_store_value_fits():
    value = "v" * (MAX_STATE_VALUE - 5)  # msgpack str header: 3 bytes
    assert decode("store.set", {"key": "k", "value": value}).value == value


json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats()
    | st.text(max_size=80)
    | st.binary(max_size=40),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=12,
)
param_names = st.sampled_from(
    sorted({p for c in CONTRACTS.values() for p in c.accepts} | {"property", "property_id"})
) | st.text(max_size=12)


@given(
    name=st.sampled_from(sorted(CONTRACTS)),
    raw=st.dictionaries(param_names, json_values, max_size=6),
)
def test_any_params_decode_into_the_calls_struct_or_give_bad_request(name, raw):
    contract = CONTRACTS[name]
    try:
        params = decode_params(name, contract, raw)
    except BadRequest as exc:
        assert exc.status == 400
        assert exc.details["reason"] in ("unknown_parameter", "invalid_parameter")
        assert len(exc.message) < 1200
        if exc.details["reason"] == "unknown_parameter":
            assert set(raw) - set(contract.accepts)
    else:
        assert isinstance(params, contract.params)
        assert set(raw) <= set(contract.accepts)


def test_calls_without_params_decode_to_no_params():
    for name, contract in CONTRACTS.items():
        if not contract.accepts:
            assert decode(name, {}) == NoParams()


# --- refusal risk -----------------------------------------------------------------------------


@given(refusal=st.sampled_from(list(Refusal)), scope=st.sampled_from([None, *sorted(SCOPES)]))
def test_every_refusal_has_a_risk_between_1_and_100(refusal, scope):
    assert 1 <= refusal_risk(refusal, scope) <= 100


def test_token_forgery_and_cross_property_attempts_score_high():
    for refusal in (
        Refusal.FORGED_TOKEN,
        Refusal.STALE_TOKEN,
        Refusal.PROPERTY_NOT_ASSIGNED,
        Refusal.CROSS_PROPERTY_PARAMETER,
    ):
        assert refusal_risk(refusal, None) >= 70
        assert refusal_risk(refusal, "proxy:egress") == FIXED_RISK[refusal]
    assert refusal_risk(Refusal.FORGED_TOKEN) > refusal_risk(Refusal.STALE_TOKEN)


def test_a_call_beyond_the_grants_scores_the_scope_it_needed():
    assert refusal_risk(Refusal.SCOPE_DENIED, "cameras:read") == 10 + 30
    assert refusal_risk(Refusal.SCOPE_DENIED, "proxy:egress") == 40 + 30
    assert refusal_risk(Refusal.FORBIDDEN, "events:publish") == 20 + 30
    assert refusal_risk(Refusal.BAD_PARAMETERS, None) == 5
    assert refusal_risk(Refusal.BAD_PARAMETERS, "streams:read") == 15 + 5
    ordered = sorted(SCOPES, key=lambda s: SCOPES[s].risk)
    risks = [refusal_risk(Refusal.SCOPE_DENIED, s) for s in ordered]
    assert risks == sorted(risks)


def test_audit_types():
    assert audit_type(Refusal.CROSS_PROPERTY_PARAMETER) == "security.cross_property_attempt"
    assert {audit_type(r) for r in Refusal if r is not Refusal.CROSS_PROPERTY_PARAMETER} == {
        "security.core_call_refused"
    }


# --- store.keys pages, event types, purity ------------------------------------------------


def test_store_keys_takes_a_bounded_page():
    assert decode("store.keys", {}) == StoreKeysParams(after="", limit=MAX_KEYS_PAGE)
    assert decode("store.keys", {"after": "k9", "limit": 10}) == StoreKeysParams(
        after="k9", limit=10
    )
    for bad in (
        {"limit": 0},
        {"limit": MAX_KEYS_PAGE + 1},
        {"limit": "10"},
        {"after": "k" * (MAX_STATE_KEY + 1)},
        {"after": None},
    ):
        with pytest.raises(BadRequest):
            decode("store.keys", bad)


@given(st.text(max_size=40))
def test_an_event_type_is_a_whole_match_never_one_before_a_newline(text):
    assert (EVENT_TYPE.fullmatch(text) is not None) == (
        re.fullmatch(r"[a-z][a-z0-9_]*(\.[a-z][a-z0-9_]*)+", text) is not None
    )
    assert re.search(EVENT_TYPE_PATTERN, "camera.motion\n") is None


def test_the_contract_imports_no_io_module():
    """A pure core: importing it pulls in neither trio nor jwt, cryptography or file access."""
    probe = (
        "import sys, pentarun.lanes.calls; "
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('trio', 'jwt', "
        "'cryptography') or m in ('pentarun.security.stream_tokens', 'pentarun.security.trust')))"
    )
    out = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True
    ).stdout
    assert out.strip() == "[]"
