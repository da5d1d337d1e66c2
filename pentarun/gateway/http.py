"""HTTP habits of the quart-trio admin app: bounded request bodies, drained bodies, replies.

Bounded bodies: quart-trio reads every request body into memory in the background, up to the
limit the request was created with. `bounded_request_class(limit_for)` makes that limit the
route's own (`limit_for(method, path)`, decided from the request line before a single body
byte is read): a Content-Length above it is refused at once, and a streamed body stops being
kept the moment it passes it; either way the route's read raises PayloadTooLarge (413).

Unread request bodies: when a route answers before reading the body (a 401 before auth, a
413), quart-trio keeps the request open waiting for that body, and the keep-alive connection
hangs for the client's next request (hypercorn alone would close it); a client still
uploading would see its connection reset instead of the answer. So before every answer the
rest of the body is read and thrown away for at most `DRAIN_S` (nothing past the limit is
kept); a body that does not finish in time gets `Connection: close` instead.

Replies: a worker's answer becomes a response in one place: JSON, raw bytes, or a stream with
no response timeout (quart cuts responses at 60 s by default) that tells the worker to stop
when the client goes away. Its status and headers pass `replies.plugin_head` first.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import msgspec
import trio
from quart import Response, request
from quart_trio import QuartTrio
from quart_trio.wrappers.request import TrioBody, TrioRequest
from werkzeug.datastructures import Headers
from werkzeug.exceptions import RequestEntityTooLarge

from ..errors import BadPluginReply, PayloadTooLarge
from ..ipc.messages import HttpReply, Reply
from ..supervisor.streams import StreamReply
from . import replies

DRAIN_S = 1.0
BODY_METHODS = {"POST", "PUT", "PATCH", "DELETE"}

LimitFor = Callable[[str, str], int]


class BoundedBody(TrioBody):
    """A request body kept in memory up to its limit; past it, bytes are counted and dropped.

    Quart marks a body complete when it overflows; `received_all` tells when the client really
    sent its last byte (what draining waits for).
    """

    def __init__(self, expected_content_length: int | None, max_content_length: int | None) -> None:
        super().__init__(expected_content_length, max_content_length)
        self.limit = max_content_length
        self.dropped = 0
        self.received_all = trio.Event()

    def append(self, data: bytes) -> None:
        if not data:
            return
        if self._must_raise is not None:
            self.dropped += len(data)
            return
        self._data.extend(data)
        self._has_data.set()
        if self.limit is not None and len(self._data) > self.limit:
            self.dropped += len(self._data)
            self._data.clear()
            self._must_raise = RequestEntityTooLarge()
            self._complete.set()  # a waiting reader wakes up and raises
            self._has_data.set()

    def set_complete(self) -> None:
        self.received_all.set()
        super().set_complete()

    async def discard_rest(self) -> None:
        """Wait until the client sent its last byte, keeping nothing more than the limit."""
        self._data.clear()
        await self.received_all.wait()
        self._data.clear()


def bounded_request_class(limit_for: LimitFor) -> type[TrioRequest]:
    """A request class whose body limit is `limit_for(method, path)` (see the docstring)."""

    class BoundedRequest(TrioRequest):
        body_class = BoundedBody

        def __init__(  # noqa: PLR0917 - quart's own signature
            self,
            method: str,
            scheme: str,
            path: str,
            query_string: bytes,
            headers: Headers,
            root_path: str,
            http_version: str,
            scope: Any,
            *,
            max_content_length: int | None = None,
            body_timeout: int | None = None,
            send_push_promise: Callable[[str, Headers], Awaitable[None]],
        ) -> None:
            limit = limit_for(method, path)
            super().__init__(
                method,
                scheme,
                path,
                query_string,
                headers,
                root_path,
                http_version,
                scope,
                max_content_length=limit,
                body_timeout=body_timeout,
                send_push_promise=send_push_promise,
            )
            self.max_content_length = limit

    return BoundedRequest


async def read_body() -> bytes:
    """The whole request body, or PayloadTooLarge (413) naming the route's limit."""
    try:
        data = await request.get_data(as_text=False)
    except RequestEntityTooLarge:
        raise payload_too_large() from None
    return data if isinstance(data, bytes) else data.encode()


def payload_too_large() -> PayloadTooLarge:
    limit = request.max_content_length
    return PayloadTooLarge(
        f"the request body is larger than this route's limit of {limit} bytes",
        {"limit_bytes": limit},
    )


def drain_unread_bodies(app: QuartTrio) -> None:
    @app.after_request
    async def drain(response: Response) -> Response:
        if request.method in BODY_METHODS:
            body = request.body
            with trio.move_on_after(DRAIN_S) as scope:
                if isinstance(body, BoundedBody):
                    await body.discard_rest()
                else:
                    await request.get_data(cache=False)
            if scope.cancelled_caught:
                response.headers["Connection"] = "close"
        return response


def reply_response(reply: Reply | HttpReply | StreamReply, wrap_json: bool = False) -> Response:
    """The HTTP response for a worker's reply; `wrap_json` puts JSON under "result".

    A raw or streamed answer's status and headers are checked by `replies.plugin_head`, as on
    the listeners: BadPluginReply (502) for a status HTTP cannot carry (a stream is closed)."""
    if isinstance(reply, StreamReply):
        start = reply.start
        try:
            head = replies.plugin_head(start.status, start.content_type, start.headers)
            if head.bodiless:
                raise BadPluginReply(f"the plugin streamed a body with status {head.status}")
        except BadPluginReply:
            reply.close()
            raise

        async def body() -> AsyncIterator[bytes]:
            try:
                async for chunk in reply.chunks():
                    yield chunk
            finally:
                reply.close()

        response = Response(
            body(),
            status=head.status,
            headers=Headers(head.headers),
            content_type=head.content_type,
        )
        response.timeout = None
        return response
    if isinstance(reply, HttpReply):
        head = replies.plugin_head(reply.status, reply.content_type, reply.headers)
        return Response(
            b"" if head.bodiless else reply.body,
            status=head.status,
            headers=Headers(head.headers),
            content_type=head.content_type,
        )
    value = {"result": reply.value} if wrap_json else reply.value
    return Response(msgspec.json.encode(value), content_type="application/json")
