"""Values plugin code returns or raises."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass, field


@dataclass(frozen=True)
class Response:
    """A raw HTTP response from a handler: any bytes, status and headers."""

    status: int = 200
    body: bytes | str = b""
    headers: dict[str, str] = field(default_factory=dict)
    content_type: str = "application/octet-stream"

    @property
    def body_bytes(self) -> bytes:
        return self.body.encode() if isinstance(self.body, str) else self.body


@dataclass(frozen=True)
class Stream:
    """A streamed HTTP response: `chunks` is an async iterator of bytes (e.g. MJPEG frames).

    The worker sends a chunk only when the core has room for it (the client keeps up), and
    the iterator is closed when the client goes away.
    """

    chunks: AsyncIterator[bytes]
    content_type: str = "application/octet-stream"
    status: int = 200
    headers: dict[str, str] = field(default_factory=dict)


class Error(Exception):
    """Raise from a handler for a clean error: `Error("not_found", "no such camera", 404)`."""

    def __init__(self, code: str, message: str = "", status: int = 400) -> None:
        super().__init__(message or code)
        self.code = code
        self.message = message or code
        self.status = status
