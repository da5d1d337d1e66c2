"""A camera's source as the admin API takes it, validated; pure (no I/O).

    {"kind": "demo"}
    {"kind": "http",  "url": "http://cam/snapshot.jpg", "credentials": {...}}  a JPEG per request
    {"kind": "mjpeg", "url": "http://cam/video.mjpg",   "credentials": {...}}  multipart JPEG
    {"kind": "rtsp",  "url": "rtsp://cam/stream1",      "credentials": {...}}  decoded by PyAV
    {"kind": "file",  "path": "/abs/video.mp4"}                               looped, PyAV

`split_source` turns a request body into the source kept in the camera's row (never any
credential) and the credentials kept apart (sealed, `credentials.py`). Invariants: a URL carries
no user info (credentials go in `credentials`, so a URL can be shown anywhere); every string is
bounded and free of control characters; `redact` is the only way a URL reaches a log line.
"""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

import msgspec

from ..lanes.egress_addresses import AddressClass, classify, ip

MAX_URL = 2048
MAX_PATH = 1024
MAX_USERNAME = 256
MAX_PASSWORD = 1024
KINDS = ("demo", "http", "mjpeg", "rtsp", "file")
SCHEMES: dict[str, tuple[str, ...]] = {
    "http": ("http", "https"),
    "mjpeg": ("http", "https"),
    "rtsp": ("rtsp", "rtsps"),
}
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")

Username = Annotated[str, msgspec.Meta(min_length=1, max_length=MAX_USERNAME)]
Password = Annotated[str, msgspec.Meta(max_length=MAX_PASSWORD)]


class Credentials(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    username: Username
    password: Password = ""

    def __repr__(self) -> str:  # never the password, whatever prints this
        return "Credentials(<hidden>)"


class SourceBody(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """The `source` of a camera request body, before its rules are checked."""

    kind: Literal["demo", "http", "mjpeg", "rtsp", "file"] = "demo"
    url: Annotated[str, msgspec.Meta(max_length=MAX_URL)] | None = None
    path: Annotated[str, msgspec.Meta(max_length=MAX_PATH)] | None = None
    credentials: Credentials | None = None


class Source(msgspec.Struct, frozen=True, omit_defaults=True):
    """A camera's source as stored and shown (never a credential)."""

    kind: str
    url: str | None = None
    path: str | None = None


class SourceProblem(ValueError):
    """A source body that breaks a rule; `field` names where."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field


def _check_url(kind: str, url: str | None) -> str:
    if not url:
        raise SourceProblem("url", f"a {kind} source needs a url")
    if _CONTROL.search(url) or " " in url:
        raise SourceProblem("url", "the url holds spaces or control characters")
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise SourceProblem("url", f"the url is not valid: {exc}") from None
    if parts.scheme.lower() not in SCHEMES[kind]:
        raise SourceProblem("url", f"a {kind} url starts with {' or '.join(SCHEMES[kind])}://")
    if not parts.hostname:
        raise SourceProblem("url", "the url names no host")
    if parts.username is not None or parts.password is not None or "@" in parts.netloc:
        raise SourceProblem("url", "put the user name and password in `credentials`, not the url")
    if port == 0:
        raise SourceProblem("url", "the url's port must be 1-65535")
    return url


def _check_path(path: str | None) -> str:
    if not path:
        raise SourceProblem("path", "a file source needs a path")
    if _CONTROL.search(path):
        raise SourceProblem("path", "the path holds control characters")
    if not path.startswith("/"):
        raise SourceProblem("path", "the path must be absolute")
    return path


def split_source(body: SourceBody) -> tuple[Source, Credentials | None]:
    """The stored source and the credentials kept apart; SourceProblem when a rule is broken."""
    kind = body.kind
    if body.credentials is not None:
        if kind in ("demo", "file"):
            raise SourceProblem("credentials", f"a {kind} source takes no credentials")
        if _CONTROL.search(body.credentials.username) or ":" in body.credentials.username:
            raise SourceProblem("credentials", "the user name holds ':' or control characters")
        if _CONTROL.search(body.credentials.password):
            raise SourceProblem("credentials", "the password holds control characters")
    if kind == "demo":
        if body.url is not None or body.path is not None:
            raise SourceProblem("kind", "a demo source takes no url or path")
        return Source("demo"), None
    if kind == "file":
        if body.url is not None:
            raise SourceProblem("url", "a file source takes a path, not a url")
        return Source("file", path=_check_path(body.path)), None
    if body.path is not None:
        raise SourceProblem("path", f"a {kind} source takes a url, not a path")
    return Source(kind, url=_check_url(kind, body.url)), body.credentials


def source_of(stored: dict[str, Any]) -> Source:
    """The stored source of a row (an unknown kind reads as demo: nothing to connect to)."""
    kind = stored.get("kind")
    if kind not in KINDS:
        return Source("demo")
    url, path = stored.get("url"), stored.get("path")
    return Source(
        str(kind),
        url=url if isinstance(url, str) else None,
        path=path if isinstance(path, str) else None,
    )


def redact(url: str) -> str:
    """The url as a log line or error may show it: scheme, host and port only."""
    try:
        parts = urlsplit(url)
        host = parts.hostname or "?"
        port = f":{parts.port}" if parts.port else ""
    except ValueError:
        return "<invalid url>"
    return f"{parts.scheme}://{host}{port}/…"


FILES_DIR = "camera-files"  # beneath the data dir: where `file` sources may be
# where an operator scoped to properties may not point a camera: this host, link-local
# addresses (the metadata service among them), and what is not an address to dial at all
_NOT_FOR_PROPERTY_MANAGERS = {
    AddressClass.LOOPBACK,
    AddressClass.LINK_LOCAL,
    AddressClass.METADATA,
    AddressClass.UNSPECIFIED,
    AddressClass.MULTICAST,
}


def placement_problem(
    source: Source, *, trusted: bool, files_dir: str, real_path: str | None = None
) -> SourceProblem | None:
    """Where a source may point (pure; the caller resolves `real_path` of a file source):
    a `file` only beneath `files_dir` (after symbolic links) and only for root and admin
    operators; a network source of an operator scoped to properties not at this host,
    link-local or metadata addresses, or `localhost`. Names are not resolved here: a name an
    admin's DNS points at this host is the admin's to guard."""
    if source.kind == "file":
        if not trusted:
            return SourceProblem("kind", "file sources are for root and admin operators")
        inside = real_path is not None and (
            real_path == files_dir or real_path.startswith(files_dir.rstrip("/") + "/")
        )
        if not inside:
            return SourceProblem("path", f"a file source must lie beneath {files_dir}")
        return None
    if trusted or source.url is None:
        return None
    host = (urlsplit(source.url).hostname or "").lower().rstrip(".")
    if host == "localhost" or host.endswith(".localhost"):
        return SourceProblem("url", "a camera cannot be this server (localhost)")
    address = ip(host)
    if address is not None and classify(address) in _NOT_FOR_PROPERTY_MANAGERS:
        return SourceProblem(
            "url", f"a camera cannot be at {host} ({classify(address).value.replace('_', '-')})"
        )
    return None
