"""What a plugin's HTTP answer may put on the wire, decided in one place. Pure.

    plugin_head(status, content_type, headers, core_headers) -> Head   or BadPluginReply (502)

A worker answers a listener request (and an operator's call) with a status, a content type
and headers of its own choosing. None of them reaches the HTTP server unchecked: h11 refuses a
status it cannot send, a header name that is not a token, a value with a line break or a
character beyond Latin-1, and a second Content-Length, and hypercorn then drops the connection
or answers 500. So, for every plugin answer, JSON, raw or streamed, on a listener or the admin
API:
- the status must be 200-599 (a 1xx is never a final answer), else the answer is a 502
  `bad_plugin_reply`; so is a content type that is not a valid header value;
- headers the core frames itself are dropped: Content-Length and Content-Type (the body and
  the reply's own `content_type` say them), Transfer-Encoding, Connection, the other
  hop-by-hop headers and any header the plugin's Connection header names;
- a header whose name is not an RFC 9110 token, or whose value is not visible Latin-1 text
  (spaces and tabs inside it allowed, around it trimmed), or longer than MAX_VALUE, is
  dropped, and so is every header past the first MAX_HEADERS;
- the core's own headers (the listener's rate-limit headers) win over a plugin's header of
  the same name;
- a 204 or 304 carries no body and no Content-Length (`Head.bodiless`).
`Head.dropped` names (clipped) what was dropped, for the log. Nothing here raises anything but
BadPluginReply, whatever the worker sent.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field

from ..errors import BadPluginReply

MAX_HEADERS = 64
MAX_VALUE = 8000  # characters; clients refuse header lines much longer (aiohttp: 8190)
MAX_NAME_SHOWN = 64
# framed by the core, or meaningful for one connection only (RFC 9110 §7.6.1)
DROPPED = frozenset(
    {
        "content-length",
        "content-type",
        "transfer-encoding",
        "connection",
        "keep-alive",
        "proxy-connection",
        "te",
        "trailer",
        "upgrade",
        "proxy-authenticate",
        "proxy-authorization",
    }
)
BODILESS = frozenset({204, 304})

TOKEN = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
VALUE = re.compile(r"(?:[\x21-\x7e\x80-\xff](?:[\t\x20-\x7e\x80-\xff]*[\x21-\x7e\x80-\xff])?)?")


@dataclass(frozen=True)
class Head:
    status: int
    content_type: str
    headers: list[tuple[str, str]]  # lower-case names, checked values; core headers last
    dropped: list[str] = field(default_factory=list)

    @property
    def bodiless(self) -> bool:
        return self.status in BODILESS

    def asgi(self, body_length: int | None) -> list[tuple[bytes, bytes]]:
        """The ASGI header list: content type, length (None: streamed), then the rest."""
        raw = [(b"content-type", self.content_type.encode("latin-1"))]
        if body_length is not None and not self.bodiless:
            raw.append((b"content-length", str(body_length).encode("latin-1")))
        raw += [(k.encode("latin-1"), v.encode("latin-1")) for k, v in self.headers]
        return raw


def _shown(name: object) -> str:
    text = name if isinstance(name, str) else repr(name)
    return text[:MAX_NAME_SHOWN]


def valid_value(value: object) -> str | None:
    """The value trimmed of spaces and tabs, if it can be a header value; else None."""
    if not isinstance(value, str) or len(value) > MAX_VALUE:
        return None
    trimmed = value.strip(" \t")
    return trimmed if VALUE.fullmatch(trimmed) else None


def plugin_head(
    status: object,
    content_type: object,
    headers: Mapping[str, str],
    core_headers: Mapping[str, str] | None = None,
) -> Head:
    """The status and headers the core sends for a plugin's answer (see the docstring)."""
    if not isinstance(status, int) or isinstance(status, bool) or not 200 <= status <= 599:
        raise BadPluginReply(
            f"the plugin answered with HTTP status {_shown(status)}; it must be 200-599",
            {"status": _shown(status)},
        )
    checked_type = valid_value(content_type)
    if not checked_type:
        raise BadPluginReply(
            "the plugin answered with a content type that is not a valid header value",
            {"content_type": _shown(content_type)},
        )
    core = {name.lower(): value for name, value in (core_headers or {}).items()}
    named_by_connection: set[str] = set()
    for name, value in headers.items():
        if isinstance(name, str) and name.lower() == "connection" and isinstance(value, str):
            named_by_connection |= {part.strip().lower() for part in value.split(",")}
    kept: list[tuple[str, str]] = []
    dropped: list[str] = []
    for name, value in headers.items():
        lowered = name.lower() if isinstance(name, str) and TOKEN.fullmatch(name) else ""
        checked = valid_value(value)
        if (
            not lowered
            or lowered in DROPPED
            or lowered in named_by_connection
            or lowered in core
            or checked is None
            or len(kept) >= MAX_HEADERS
        ):
            if lowered not in core:  # the core's own header replacing it is no news
                dropped.append(_shown(name))
            continue
        kept.append((lowered, checked))
    kept += list(core.items())
    return Head(status, checked_type, kept, dropped[:MAX_HEADERS])
