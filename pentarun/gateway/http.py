"""HTTP habits shared by every quart-trio app of the gateway.

Unread request bodies: when a route answers before reading the body (a 401 before auth, a
400), quart-trio keeps the request open waiting for that body, and the keep-alive connection
hangs for the client's next request (hypercorn alone would close it). So after every response
the rest of the body is drained within `DRAIN_S`; a body that does not arrive in time gets
`Connection: close` instead, and the client reconnects.

Replies: a worker's answer becomes a response in one place: JSON, raw bytes, or a stream with
no response timeout (quart cuts responses at 60 s by default) that tells the worker to stop
when the client goes away.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import msgspec
import trio
from quart import Response, request
from quart_trio import QuartTrio

from ..ipc.messages import HttpReply, Reply
from ..supervisor.streams import StreamReply

DRAIN_S = 1.0
BODY_METHODS = {"POST", "PUT", "PATCH", "DELETE"}


def drain_unread_bodies(app: QuartTrio) -> None:
    @app.after_request
    async def drain(response: Response) -> Response:
        if request.method in BODY_METHODS:
            with trio.move_on_after(DRAIN_S) as scope:
                await request.get_data(cache=False)
            if scope.cancelled_caught:
                response.headers["Connection"] = "close"
        return response


def reply_response(reply: Reply | HttpReply | StreamReply, wrap_json: bool = False) -> Response:
    """The HTTP response for a worker's reply; `wrap_json` puts JSON under "result"."""
    if isinstance(reply, StreamReply):
        start = reply.start

        async def body() -> AsyncIterator[bytes]:
            try:
                async for chunk in reply.chunks():
                    yield chunk
            finally:
                reply.close()

        response = Response(
            body(), status=start.status, headers=start.headers, content_type=start.content_type
        )
        response.timeout = None
        return response
    if isinstance(reply, HttpReply):
        return Response(
            reply.body, status=reply.status, headers=reply.headers, content_type=reply.content_type
        )
    value = {"result": reply.value} if wrap_json else reply.value
    return Response(msgspec.json.encode(value), content_type="application/json")
