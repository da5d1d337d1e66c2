"""The core calls' contract: each call's scope and typed parameters, and the risk of a refusal.

Pure: no I/O. `CONTRACTS` names every core call a worker may make, the scope it needs and the
msgspec Struct its wire `CoreCall.params` decode into; `decode_params` is the one place that
map becomes typed, and handlers only ever see the Struct. `refusal_risk` scores a refused call
for the audit log from what was attempted.

Invariants: no params Struct accepts a field it does not declare (a parameter a call does not
take is refused by name, 400 `bad_request` with reason `unknown_parameter`); every string a
worker sends is bounded; decoding any map either yields the call's Struct or raises BadRequest;
a `property`/`property_id` parameter naming a property other than the call's own is a
cross-property attempt, whatever the call.

Every answer is bounded too: a plugin holds at most MAX_STATE_KEYS keys per property (a
`store.set` of one more new key is 409 `store_full`), and `store.keys` answers a page of at
most MAX_KEYS_PAGE keys (`limit`, in key order after `after`), so its reply stays far below
the IPC frame limit (MAX_KEYS_PAGE keys of MAX_STATE_KEY characters, 4 bytes each: 1 MiB).
"""

from __future__ import annotations

import enum
import functools
import re
import reprlib
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Annotated, Any

import msgspec

from ..errors import BadRequest
from ..recordings import CLIP_ID_PATTERN, MAX_CLIP_ID
from ..security.limits import MAX_STREAM_TTL_S
from ..security.scopes import MAX_RISK, SCOPES

MAX_STATE_KEY = 256
MAX_STATE_KEYS = 10_000  # keys a plugin may hold per property
MAX_KEYS_PAGE = 1000  # keys one `store.keys` answer holds at most
MAX_STATE_VALUE = 64 * 1024  # bytes, as msgpack
MAX_EVENT_DATA = 64 * 1024  # bytes, as msgpack
MAX_ID = 64  # camera and stream ids (the admin API's camera id pattern allows 64)
MAX_PROTOCOL = 32
MAX_EVENT_TYPE = 128
MAX_STREAM_TOKEN = 4096
MAX_NAME_SHOWN = 64  # how much of a worker-chosen name an error message or audit row repeats
MAX_NAMES_SHOWN = 8
MAX_HANDLER = 128
MAX_PLUGIN_CALL_PARAMS = 256 * 1024  # bytes, as msgpack
MAX_DEADLINE_MS = 600_000
MAX_RECORDINGS_PAGE = 1000  # clips one `recordings.list` answer holds at most
MAX_RECORDING_CHUNK = 4 * 1024 * 1024  # bytes of a clip one `recordings.get` answer holds
MAX_RECORDING_S = 3600.0  # the longest clip one may ask for (`[recordings]` caps it further)
MAX_STORAGE_NAME = 200  # characters of a `ctx.storage` file name
MAX_STORAGE_FILE = 1024 * 1024  # bytes of one file (one `storage.put`, one `storage.get`)
MAX_STORAGE_PAGE = 1000  # entries one `storage.list` answer holds at most
# a file name: segments of [A-Za-z0-9_.-], none starting with "." or "-", joined by "/"
STORAGE_NAME_PATTERN = r"^[A-Za-z0-9_][A-Za-z0-9_.-]*(/[A-Za-z0-9_][A-Za-z0-9_.-]*)*\Z"

StoreKey = Annotated[str, msgspec.Meta(min_length=1, max_length=MAX_STATE_KEY)]
CameraId = Annotated[str, msgspec.Meta(min_length=1, max_length=MAX_ID)]
StreamId = Annotated[str, msgspec.Meta(min_length=1, max_length=MAX_ID)]
StreamProtocol = Annotated[str, msgspec.Meta(min_length=1, max_length=MAX_PROTOCOL)]
TtlSeconds = Annotated[float, msgspec.Meta(gt=0, le=MAX_STREAM_TTL_S)]
StreamToken = Annotated[str, msgspec.Meta(min_length=1, max_length=MAX_STREAM_TOKEN)]
EventType = Annotated[str, msgspec.Meta(min_length=1, max_length=MAX_EVENT_TYPE)]
KeysAfter = Annotated[str, msgspec.Meta(max_length=MAX_STATE_KEY)]
KeysLimit = Annotated[int, msgspec.Meta(ge=1, le=MAX_KEYS_PAGE)]
PluginKey = Annotated[str, msgspec.Meta(pattern=r"^[a-z][a-z0-9-]{1,62}\Z")]
StorageName = Annotated[
    str,
    msgspec.Meta(min_length=1, max_length=MAX_STORAGE_NAME, pattern=STORAGE_NAME_PATTERN),
]
HandlerName = Annotated[str, msgspec.Meta(min_length=1, max_length=MAX_HANDLER)]

# A canonical event type (`camera.motion`); anchored with \Z, not $, which also matches
# before a trailing newline. The admin API's `POST /api/events` takes the same pattern.
EVENT_TYPE_PATTERN = r"^[a-z][a-z0-9_]*(\.[a-z][a-z0-9_]*)+\Z"
EVENT_TYPE = re.compile(EVENT_TYPE_PATTERN)


def _msgpack_size(value: Any, limit: int, what: str) -> None:
    """Raise ValueError (msgspec reports it as a validation error) past `limit` bytes."""
    try:
        size = len(msgspec.msgpack.encode(value))
    except RecursionError:
        raise ValueError(f"{what} is nested too deeply") from None
    if size > limit:
        raise ValueError(f"{what} larger than {limit} bytes")


class Params(msgspec.Struct, forbid_unknown_fields=True, frozen=True, kw_only=True):
    """Base of every core call's parameters."""


class NoParams(Params, frozen=True):
    """`properties.get`, `cameras.list`: no parameters at all."""


class StoreKeysParams(Params, frozen=True):
    """`store.keys`: at most `limit` keys, in key order, those after `after` ("" = the first).
    A full page may have more after it: ask again with `after` = its last key."""

    after: KeysAfter = ""
    limit: KeysLimit = MAX_KEYS_PAGE


class StoreKeyParams(Params, frozen=True):
    """`store.get`, `store.delete`."""

    key: StoreKey


class StoreSetParams(Params, frozen=True):
    key: StoreKey
    value: Any

    def __post_init__(self) -> None:
        _msgpack_size(self.value, MAX_STATE_VALUE, "store value")


class CameraParams(Params, frozen=True):
    """`cameras.get`, `cameras.snapshot`."""

    camera: CameraId


class CameraFrameParams(Params, frozen=True):
    """`cameras.frame`: the first frame after seq `after` (0: the latest at once)."""

    camera: CameraId
    after: Annotated[int, msgspec.Meta(ge=0)] = 0


class StreamsTokenParams(Params, frozen=True):
    """`streams.token`; nil or absent means the default (stream `main`, protocol `mjpeg`, the
    configured lifetime)."""

    camera: CameraId
    stream: StreamId | None = None
    protocol: StreamProtocol | None = None
    ttl_s: TtlSeconds | None = None
    # the listener request's `caller`, handed back: the token is bound to that request's key
    caller: Annotated[str, msgspec.Meta(max_length=256)] = ""


class StreamsVerifyParams(Params, frozen=True):
    token: StreamToken
    camera: CameraId | None = None


class EventsPublishParams(Params, frozen=True):
    event_type: EventType = msgspec.field(name="type")
    data: dict[str, Any] = {}

    def __post_init__(self) -> None:
        _msgpack_size(self.data, MAX_EVENT_DATA, "event data")


class PluginsCallParams(Params, frozen=True):
    """`plugins.call`: a handler of a declared dependency, for the call's own property."""

    plugin: PluginKey
    handler: HandlerName
    params: dict[str, Any] = {}
    deadline_ms: Annotated[int, msgspec.Meta(ge=0, le=MAX_DEADLINE_MS)] = 0  # 0: the default

    def __post_init__(self) -> None:
        _msgpack_size(self.params, MAX_PLUGIN_CALL_PARAMS, "plugin call parameters")


class StorageNameParams(Params, frozen=True):
    """`storage.get`, `storage.delete`."""

    name: StorageName


class StoragePutParams(Params, frozen=True):
    """`storage.put`: the whole file, replaced atomically."""

    name: StorageName
    data: Annotated[bytes, msgspec.Meta(max_length=MAX_STORAGE_FILE)]


class StorageListParams(Params, frozen=True):
    """`storage.list`: at most `limit` files, in name order, those after `after` ("" = the
    first)."""

    after: Annotated[str, msgspec.Meta(max_length=MAX_STORAGE_NAME)] = ""
    limit: Annotated[int, msgspec.Meta(ge=1, le=MAX_STORAGE_PAGE)] = MAX_STORAGE_PAGE


RecordingId = Annotated[str, msgspec.Meta(max_length=MAX_CLIP_ID, pattern=CLIP_ID_PATTERN)]


class RecordingsListParams(Params, frozen=True):
    """`recordings.list`: finished clips in start order after clip `after` ("" = the first),
    `limit` at most, of one camera when `camera` is given."""

    camera: CameraId | None = None
    after: Annotated[str, msgspec.Meta(max_length=MAX_CLIP_ID)] = ""
    limit: Annotated[int, msgspec.Meta(ge=1, le=MAX_RECORDINGS_PAGE)] = 100


class RecordingsGetParams(Params, frozen=True):
    """`recordings.get`: a clip's metadata and, when `length` > 0, up to `length` bytes of its
    file from `offset` (read a clip in chunks; the format is in recordings/clips.py)."""

    id: RecordingId
    offset: Annotated[int, msgspec.Meta(ge=0)] = 0
    length: Annotated[int, msgspec.Meta(ge=0, le=MAX_RECORDING_CHUNK)] = 0


class RecordingsStartParams(Params, frozen=True):
    """`recordings.start`: record the camera for `duration_s` (nil: the configured default)."""

    camera: CameraId
    duration_s: Annotated[float, msgspec.Meta(gt=0, le=MAX_RECORDING_S)] | None = None


@dataclass(frozen=True)
class Contract:
    """What a core call needs (`scope`, None for the plugin's own store) and takes (`params`)."""

    scope: str | None
    params: type[Params]

    @functools.cached_property
    def accepts(self) -> tuple[str, ...]:
        """The wire names of the parameters this call takes."""
        return tuple(f.encode_name for f in msgspec.structs.fields(self.params))


CONTRACTS: Mapping[str, Contract] = {
    "store.get": Contract(None, StoreKeyParams),
    "store.set": Contract(None, StoreSetParams),
    "store.delete": Contract(None, StoreKeyParams),
    "store.keys": Contract(None, StoreKeysParams),
    "properties.get": Contract("properties:read", NoParams),
    "cameras.list": Contract("cameras:read", NoParams),
    "cameras.get": Contract("cameras:read", CameraParams),
    "cameras.snapshot": Contract("streams:read", CameraParams),
    "cameras.frame": Contract("streams:read", CameraFrameParams),
    "streams.token": Contract("streams:read", StreamsTokenParams),
    "streams.verify": Contract("streams:read", StreamsVerifyParams),
    "events.publish": Contract("events:publish", EventsPublishParams),
    "plugins.call": Contract("plugins:call", PluginsCallParams),
    "recordings.list": Contract("recordings:read", RecordingsListParams),
    "recordings.get": Contract("recordings:read", RecordingsGetParams),
    "recordings.start": Contract("recordings:write", RecordingsStartParams),
    "recordings.stop": Contract("recordings:write", CameraParams),
    "storage.put": Contract("storage:write", StoragePutParams),
    "storage.get": Contract("storage:read", StorageNameParams),
    "storage.list": Contract("storage:read", StorageListParams),
    "storage.delete": Contract("storage:write", StorageNameParams),
}


def clip(value: Any, limit: int = MAX_NAME_SHOWN) -> str:
    """A worker-chosen value as bounded text, for messages and audit rows (a value that is not
    a string is shown by `reprlib`, which bounds its size and depth)."""
    text = value if isinstance(value, str) else reprlib.repr(value)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _listed(names: list[str], total: int) -> str:
    shown = ", ".join(repr(clip(n)) for n in names)
    return shown + (f" and {total - len(names)} more" if total > len(names) else "")


def decode_params(name: str, contract: Contract, raw: Mapping[Any, Any]) -> Params:
    """The call's typed parameters from the wire map; BadRequest naming what is wrong."""
    accepts = contract.accepts
    unknown = [k for k in raw if k not in accepts]  # in the worker's order; never sorted
    if unknown:
        named = [clip(k) for k in unknown[:MAX_NAMES_SHOWN]]
        takes = f"it takes {_listed(list(accepts), len(accepts))}" if accepts else "it takes none"
        noun = "parameter" if len(unknown) == 1 else "parameters"
        raise BadRequest(
            f"core call {name!r} does not take the {noun} {_listed(named, len(unknown))} ({takes})",
            {"reason": "unknown_parameter", "parameters": named, "accepted": list(accepts)},
        )
    try:
        return msgspec.convert(raw, contract.params)
    except msgspec.ValidationError as exc:
        raise BadRequest(
            f"core call {name!r}: {clip(str(exc), 200)}",
            {"reason": "invalid_parameter", "accepted": list(accepts)},
        ) from None


PROPERTY_PARAMETERS = ("property", "property_id")


def foreign_property(raw: Mapping[Any, Any], own_property: str) -> str | None:
    """What a `property`/`property_id` parameter names when that is not the call's own
    property (a cross-property attempt), clipped; None when no parameter names another."""
    for name in PROPERTY_PARAMETERS:
        value = raw.get(name)
        if value is not None and value != own_property:
            return clip(value, 200)
    return None


class Refusal(enum.Enum):
    """Why the core refused a core call; each kind has its own risk score."""

    FORGED_TOKEN = "forged_token"  # the signature does not verify, or another plugin's token
    STALE_TOKEN = "stale_token"  # expired, revoked or missing
    PROPERTY_NOT_ASSIGNED = "property_not_assigned"
    CROSS_PROPERTY_PARAMETER = "cross_property_parameter"  # a parameter naming another property
    UNKNOWN_CALL = "unknown_call"
    SCOPE_DENIED = "scope_denied"
    FORBIDDEN = "forbidden"  # a handler's own permission check (an undeclared event type)
    BAD_PARAMETERS = "bad_parameters"  # unknown, mistyped or oversized parameters


TOKEN_REFUSALS: Mapping[str, Refusal] = {
    "invalid": Refusal.FORGED_TOKEN,
    "wrong_plugin": Refusal.FORGED_TOKEN,
    "expired": Refusal.STALE_TOKEN,
    "revoked": Refusal.STALE_TOKEN,
    "missing": Refusal.STALE_TOKEN,
}

FIXED_RISK: Mapping[Refusal, int] = {
    Refusal.FORGED_TOKEN: 90,
    Refusal.STALE_TOKEN: 70,
    Refusal.PROPERTY_NOT_ASSIGNED: 90,
    Refusal.CROSS_PROPERTY_PARAMETER: 90,
    Refusal.UNKNOWN_CALL: 30,
}
BEYOND_GRANT_RISK = 30  # added to the risk of the scope a refused call needed
BAD_PARAMETERS_RISK = 5  # likewise, for malformed parameters (more often a bug than an attack)


def refusal_risk(refusal: Refusal, scope: str | None = None) -> int:
    """The audit risk score (1..100) of a refused core call that needed `scope`.

    Token forgery and reaching for another property score a fixed high risk; a call beyond
    the plugin's grants scores the risk of the scope it needed plus a margin.
    """
    fixed = FIXED_RISK.get(refusal)
    if fixed is not None:
        return fixed
    needed = SCOPES[scope].risk if scope is not None and scope in SCOPES else 0
    margin = BAD_PARAMETERS_RISK if refusal is Refusal.BAD_PARAMETERS else BEYOND_GRANT_RISK
    return min(MAX_RISK, needed + margin)


def audit_type(refusal: Refusal) -> str:
    if refusal is Refusal.CROSS_PROPERTY_PARAMETER:
        return "security.cross_property_attempt"
    return "security.core_call_refused"
