"""Every message that crosses the core <-> worker boundary, as tagged msgspec Structs.

Pure: no I/O. Each message is a msgpack map with a `"kind"` tag (docs/protocol.md has the
table). `CoreMessage` is what the core sends, `WorkerMessage` what a worker sends; each side
decodes only the other side's union, so a worker cannot forge a core message.
"""

from __future__ import annotations

from typing import Any, Literal

import msgspec

PROTOCOL_VERSION = 1
STREAM_CREDIT = 4  # chunks a worker may send ahead of the core's stream_credit


class _Msg(msgspec.Struct, tag_field="kind", omit_defaults=True, forbid_unknown_fields=True):
    pass


# --- worker -> core ---------------------------------------------------------------------------


class Hello(_Msg, tag="hello"):
    """First frame a worker sends: who it is and what it can do."""

    protocol: int
    pid: int
    handlers: list[str] = []
    hooks: list[str] = []
    events: list[str] = []
    sdk: str = ""


class Ready(_Msg, tag="ready"):
    """The worker ran its on_start callbacks and accepts calls: the handshake is complete."""


class Reply(_Msg, tag="reply"):
    """Successful result of a Call: any JSON-compatible value."""

    id: int
    value: Any = None


class HttpReply(_Msg, tag="http_reply"):
    """Successful result of a Call that is a raw HTTP response (bytes, custom headers)."""

    id: int
    status: int = 200
    body: bytes = b""
    content_type: str = "application/octet-stream"
    headers: dict[str, str] = {}


class StreamStart(_Msg, tag="stream_start"):
    """The Call's answer is a stream: headers now, `stream_chunk`s next, then `stream_end`.

    Flow control: the worker may have at most STREAM_CREDIT chunks unacknowledged; the core
    grants more with `stream_credit` as the client consumes them.
    """

    id: int
    status: int = 200
    content_type: str = "application/octet-stream"
    headers: dict[str, str] = {}


class StreamChunk(_Msg, tag="stream_chunk"):
    id: int
    data: bytes


class StreamEnd(_Msg, tag="stream_end"):
    id: int
    error: str = ""


class Failure(_Msg, tag="failure"):
    """A Call failed inside plugin code (an `sdk.Error` or an unexpected exception)."""

    id: int
    code: str
    message: str
    status: int = 500


class HealthReport(_Msg, tag="health_report"):
    id: int
    ok: bool
    detail: dict[str, Any] = {}


class CoreCall(_Msg, tag="core_call"):
    """The worker asks the core for data (`ctx.core.call`, `ctx.store`), with its token."""

    id: int
    token: str
    property: str
    name: str
    params: dict[str, Any] = {}


class EventDone(_Msg, tag="event_done"):
    """The worker's `on_event` handlers for event `id` have run."""

    id: int


class Log(_Msg, tag="log"):
    """A log record. `in_call`: emitted while serving a Call (false, and omitted on the wire,
    outside calls); such records are the caller's failure and do not feed the error-storm
    rule."""

    level: int
    logger: str
    message: str
    created: float = 0.0
    in_call: bool = False


WorkerMessage = (
    Hello
    | Ready
    | Reply
    | HttpReply
    | StreamStart
    | StreamChunk
    | StreamEnd
    | Failure
    | HealthReport
    | CoreCall
    | EventDone
    | Log
)


# --- core -> worker ---------------------------------------------------------------------------


class Welcome(_Msg, tag="welcome"):
    """Answer to Hello: the worker's identity, its token and its configuration."""

    protocol: int
    plugin: str
    token: str
    token_expires_at: float
    config: dict[str, Any] = {}


class RateLimitInfo(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """The request budget the core applies to an HTTP request's key."""

    limit: int
    window_s: float


class HttpRequest(msgspec.Struct, frozen=True, omit_defaults=True, forbid_unknown_fields=True):
    """A request a plugin listener forwards in `Call.http`, after the core authenticated it,
    rate-limited it and scoped it to the call's property.

    `body` is the decoded JSON body (nested at most 32 deep) or nil; `base_url` is where
    clients reach the listener (its configured `public_url`, else the address the request
    arrived on; never the Host header): build handed-out URLs from it. `auth` says how the
    client proved itself. `caller` is an opaque value the core signed for the request's key;
    hand it back unchanged in `streams.token` (it is how a stream token dies with its key).
    """

    method: str
    path: str
    path_params: dict[str, str] = {}
    query: dict[str, str] = {}
    body: Any = None
    base_url: str = ""
    auth: Literal["key", "stream_token"] = "key"
    caller: str = ""
    rate_limit: RateLimitInfo | None = None

    def handler_params(self) -> dict[str, Any]:
        """The `params` a Python handler receives for this request (the SDK's shape)."""
        params: dict[str, Any] = {
            "method": self.method,
            "path": dict(self.path_params),
            "query": dict(self.query),
            "body": self.body,
            "base_url": self.base_url,
            "auth": self.auth,
        }
        if self.caller:
            params["caller"] = self.caller
        if self.rate_limit is not None:
            params["rate_limit"] = {
                "limit": self.rate_limit.limit,
                "window_s": self.rate_limit.window_s,
            }
        return params


class Call(_Msg, tag="call"):
    """Invoke a handler for one property. `deadline_ms` is the time the caller will wait.

    A listener's call carries its request in `http` (and no `params`); other calls (admin
    calls, test gates, hooks) carry `params`.
    """

    id: int
    handler: str
    property: str
    params: dict[str, Any] = {}
    deadline_ms: int = 0
    http: HttpRequest | None = None


CallParams = dict[str, Any] | HttpRequest  # what a handler is called with


def call_message(
    call_id: int, handler: str, property_id: str, params: CallParams, deadline_ms: int
) -> Call:
    """The Call for `params`: an HttpRequest travels typed in `http`, a dict in `params`."""
    if isinstance(params, HttpRequest):
        return Call(call_id, handler, property_id, deadline_ms=deadline_ms, http=params)
    return Call(call_id, handler, property_id, params, deadline_ms)


class Cancel(_Msg, tag="cancel"):
    """The caller of Call `id` gave up (or a stream's client left); stop working on it."""

    id: int


class StreamCredit(_Msg, tag="stream_credit"):
    """The client consumed `n` more chunks of stream `id`: the worker may send `n` more."""

    id: int
    n: int = 1


class HealthProbe(_Msg, tag="health_probe"):
    id: int


class TokenRefresh(_Msg, tag="token_refresh"):
    token: str
    expires_at: float


class CoreResult(_Msg, tag="core_result"):
    id: int
    value: Any = None


class CoreFailure(_Msg, tag="core_failure"):
    id: int
    code: str
    message: str
    status: int = 500
    details: dict[str, Any] = {}  # the error's details (e.g. `storage_full`: used, limit)


class PlatformEvent(_Msg, tag="event"):
    """A canonical event (`camera.motion`, ...) of one property the plugin subscribed to."""

    id: int
    type_: str = msgspec.field(name="event_type")
    property: str = ""
    data: dict[str, Any] = {}
    at: float = 0.0


class ConfigUpdate(_Msg, tag="config_update"):
    """The operator changed the plugin's configuration (already validated by the core)."""

    config: dict[str, Any] = {}


class Stop(_Msg, tag="stop"):
    """Graceful stop request: run on_stop callbacks, then exit."""

    reason: str = ""


CoreMessage = (
    Welcome
    | Call
    | Cancel
    | StreamCredit
    | HealthProbe
    | TokenRefresh
    | CoreResult
    | CoreFailure
    | ConfigUpdate
    | PlatformEvent
    | Stop
)
