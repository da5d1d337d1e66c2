"""HTTP habits shared by every quart-trio app of the gateway.

Unread request bodies: when a route answers before reading the body (a 401 before auth, a
400), quart-trio keeps the request open waiting for that body, and the keep-alive connection
hangs for the client's next request (hypercorn alone would close it). So after every response
the rest of the body is drained within `DRAIN_S`; a body that does not arrive in time gets
`Connection: close` instead, and the client reconnects.
"""

from __future__ import annotations

import trio
from quart import Response, request
from quart_trio import QuartTrio

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
