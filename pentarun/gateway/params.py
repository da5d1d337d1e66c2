"""What a valid id, name, list and query value of the admin API looks like. Pure.

Every path parameter is checked here before anything touches the store (an id that cannot
exist is a 404 at once), every query parameter is parsed and bounded here (a bad one is a 400
naming it), and the request Structs take their bounds from these constants:

    plugin keys          KEY_PATTERN   ^[a-z][a-z0-9-]{1,62}   (the manifest's key rule)
    property, camera ids ID_PATTERN    ^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}
    event types          EVENT_TYPE_PATTERN  camera.motion (lanes/calls.py, the lane's rule)
    trusted key ids      TRUST_KEY_ID_PATTERN  (security/limits.py, the trust store's rule)
    generated ids        TOKEN_ID      operators, HA keys, test runs (uuid4 hex today)
    names                at most MAX_NAME (200) characters; free text at most MAX_TEXT
    lists                at most MAX_ITEMS (1000) entries; pages at most MAX_PAGE rows
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from typing import Annotated

import msgspec

from ..errors import BadRequest, NotFound
from ..lanes.calls import EVENT_TYPE_PATTERN, MAX_EVENT_TYPE
from ..security.limits import TRUST_KEY_ID, TRUST_KEY_ID_PATTERN

# Anchored with \Z, not $: `$` also matches before a trailing newline ("p1\n").
KEY_PATTERN = r"^[a-z][a-z0-9-]{1,62}\Z"  # the manifest's key rule
ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}\Z"
TOKEN_ID_PATTERN = r"^[A-Za-z0-9_-]{1,64}\Z"
AUDIT_TYPE_PATTERN = r"^[a-z][a-z0-9_.]{0,63}\Z"

MAX_NAME = 200
MAX_TEXT = 2000
MAX_ITEMS = 1000
MAX_PAGE = 1000
MAX_HANDLER = 128
MAX_DIGEST = 256

KEY = re.compile(KEY_PATTERN)
ID = re.compile(ID_PATTERN)
TOKEN_ID = re.compile(TOKEN_ID_PATTERN)
AUDIT_TYPE = re.compile(AUDIT_TYPE_PATTERN)
INTEGER = re.compile(r"^-?[0-9]{1,18}\Z")

# Field types for request Structs (msgspec checks them while decoding, naming the field).
PluginKey = Annotated[str, msgspec.Meta(pattern=KEY_PATTERN)]
ResourceId = Annotated[str, msgspec.Meta(pattern=ID_PATTERN)]
Name = Annotated[str, msgspec.Meta(max_length=MAX_NAME)]
Text = Annotated[str, msgspec.Meta(max_length=MAX_TEXT)]
IdList = Annotated[list[ResourceId], msgspec.Meta(max_length=MAX_ITEMS)]
TrustKeyId = Annotated[str, msgspec.Meta(pattern=TRUST_KEY_ID_PATTERN)]
EventType = Annotated[str, msgspec.Meta(max_length=MAX_EVENT_TYPE, pattern=EVENT_TYPE_PATTERN)]


def plugin_key(key: str) -> str:
    """A path's plugin key, or NotFound when no plugin can have it."""
    if not KEY.fullmatch(key):
        raise NotFound(f"no plugin {key[:80]!r}", {"plugin": key[:80]})
    return key


def resource_id(value: str, what: str) -> str:
    """A path's property or camera id, or NotFound naming `what`."""
    if not ID.fullmatch(value):
        raise NotFound(f"no {what} {value[:80]!r}", {what: value[:80]})
    return value


def token_id(value: str, what: str) -> str:
    """A path's generated id (operator, HA key, test run), or NotFound naming `what`."""
    if not TOKEN_ID.fullmatch(value):
        raise NotFound(f"no {what} {value[:80]!r}", {what: value[:80]})
    return value


def trust_key_id(value: str) -> str:
    if not TRUST_KEY_ID.fullmatch(value):
        raise NotFound(f"no trusted key {value[:80]!r}", {"key_id": value[:80]})
    return value


# --- query parameters -----------------------------------------------------------------------

Query = Mapping[str, str]


def _bad(name: str, message: str, value: str) -> BadRequest:
    return BadRequest(
        f"query parameter {name!r} {message}", {"parameter": name, "value": value[:80]}
    )


def query_int(args: Query, name: str, default: int | None, low: int, high: int) -> int | None:
    """An integer query parameter within [low, high]; absent gives `default`."""
    raw = args.get(name)
    if raw is None:
        return default
    if not INTEGER.fullmatch(raw):
        raise _bad(name, "must be an integer", raw)
    value = int(raw)
    if not low <= value <= high:
        raise _bad(name, f"must be between {low} and {high}", raw)
    return value


def limit(args: Query, default: int, high: int = MAX_PAGE) -> int:
    """`limit`: how many rows a page holds (1..high)."""
    value = query_int(args, "limit", default, 1, high)
    assert value is not None
    return value


def query_float(args: Query, name: str) -> float | None:
    """A finite, non-negative number (e.g. a UNIX time in seconds); absent gives None."""
    raw = args.get(name)
    if raw is None:
        return None
    try:
        value = float(raw) if len(raw) <= 40 else math.nan
    except ValueError:
        value = math.nan
    if not math.isfinite(value) or value < 0:
        raise _bad(name, "must be a non-negative number (a UNIX time in seconds)", raw)
    return value


def query_bool(args: Query, name: str) -> bool:
    """`true`/`1` or `false`/`0`; absent is false."""
    raw = args.get(name)
    if raw is None:
        return False
    if raw.lower() in ("true", "1"):
        return True
    if raw.lower() in ("false", "0"):
        return False
    raise _bad(name, "must be true or false", raw)


def query_match(args: Query, name: str, pattern: re.Pattern[str]) -> str | None:
    """A text query parameter that must match `pattern`; absent gives None."""
    raw = args.get(name)
    if raw is None:
        return None
    if not pattern.fullmatch(raw):
        raise _bad(name, f"must match {pattern.pattern}", raw)
    return raw


def query_plugin(args: Query, name: str = "plugin") -> str | None:
    return query_match(args, name, KEY)


def query_id(args: Query, name: str) -> str | None:
    return query_match(args, name, ID)
