"""decode_json: any bytes give a value or a BadRequest, never another exception."""

import contextlib
from typing import Any

import msgspec
import pytest
from hypothesis import given
from hypothesis import strategies as st

from pentarun.errors import BadRequest
from pentarun.gateway.bodies import MAX_DEPTH, decode_json, depth_exceeds
from pentarun.gateway.params import IdList, Name


class Sample(msgspec.Struct, forbid_unknown_fields=True):
    digest: str
    names: IdList = []
    label: Name = ""
    extra: dict[str, Any] = {}


JSONISH = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**63 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4),
    max_leaves=20,
)


def _fragments() -> st.SearchStrategy[bytes]:
    """Bytes that are often almost JSON: real JSON, cut, spliced, nested, with bad UTF-8."""
    pieces = st.sampled_from(
        [b"{", b"}", b"[", b"]", b'"', b":", b",", b"\\", b"\xff", b"\xed\xa0\x80", b"\\ud800",
         b'"digest"', b'"names"', b'"extra"', b"1e999", b"-0", b"null", b"true", b" "]
    )  # fmt: skip
    spliced = st.lists(pieces, max_size=40).map(b"".join)
    encoded = JSONISH.map(msgspec.json.encode)
    return st.one_of(st.binary(max_size=200), spliced, encoded)


@given(_fragments())
def test_any_bytes_decode_or_are_a_bad_request(raw):
    for kind in (Any, Sample):
        with contextlib.suppress(BadRequest):  # anything else fails the test
            decode_json(raw, kind)


@given(st.integers(min_value=0, max_value=3000), st.sampled_from([b"[", b'{"a":']))
def test_nesting_beyond_the_bound_is_a_bad_request(depth, opener):
    closer = b"]" if opener == b"[" else b"}"
    raw = opener * depth + b"1" + closer * depth
    if depth <= MAX_DEPTH:
        assert depth_exceeds(decode_json(raw), MAX_DEPTH) is False
    else:
        with pytest.raises(BadRequest, match="nests deeper"):
            decode_json(raw)


def test_invalid_utf8_anywhere_is_a_bad_request():
    for raw in (b"\xff{}", b'{"digest": "\xff"}', b'{"dig\xc3est": "x"}', b'"\xed\xa0\x80"'):
        with pytest.raises(BadRequest):
            decode_json(raw, Sample)


def test_a_missing_or_wrong_field_is_named():
    with pytest.raises(BadRequest) as missing:
        decode_json(b"{}", Sample)
    assert str(missing.value) == "invalid request body: Object missing required field `digest`"
    with pytest.raises(BadRequest, match=r"\$\.names\[1\]"):
        decode_json(b'{"digest": "d", "names": ["ok", "not ok"]}', Sample)
    with pytest.raises(BadRequest, match=r"length <= 1000 - at `\$\.names`"):
        decode_json(msgspec.json.encode({"digest": "d", "names": ["p"] * 1001}), Sample)
    with pytest.raises(BadRequest, match=r"length <= 200 - at `\$\.label`"):
        decode_json(msgspec.json.encode({"digest": "d", "label": "x" * 201}), Sample)
    with pytest.raises(BadRequest, match="unknown field `nope`"):
        decode_json(b'{"digest": "d", "nope": 1}', Sample)


@given(JSONISH)
def test_valid_json_within_the_bound_round_trips(value):
    assert decode_json(msgspec.json.encode(value)) == value
