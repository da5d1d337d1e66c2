"""HTTP/1.1 for the egress proxy: one request per connection, read and relayed with h11.

    client = Client(stream, max_header_bytes);  request = await client.head()
    await forward(client, request, upstream, path=..., host=..., limits=..., outcome=...)
    await tunnel(client, upstream, limits, outcome)                          # CONNECT

The proxy serves exactly one request per connection and says `Connection: close` both ways
(clients open the next connection themselves), so every bound is per request: the request
body (`max_request_bytes`), the response body (`max_response_bytes`, refused up front when a
Content-Length says so, cut off when the bytes do) and a tunnel's bytes both ways together
(`max_tunnel_bytes`). Time is bounded by the caller (lanes/egress.py).

Hop-by-hop headers (Connection and what it names, Keep-Alive, Proxy-*, TE, Trailer, Upgrade,
Expect) are not forwarded; Content-Length and Transfer-Encoding are kept, h11 frames the body.
The request's Host becomes the target's authority (RFC 9112 §3.2.2). What went wrong is left
in `Outcome.error` (a short code) for the audit row; a refusal before the response started is
answered here with a short text body (`simple_response`).
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from dataclasses import dataclass
from http import HTTPStatus

import h11
import trio

CHUNK = 64 * 1024
MAX_RESPONSE_HEAD = 64 * 1024  # an upstream response's status line and headers
HOP_BY_HOP = frozenset(
    {
        b"connection",
        b"keep-alive",
        b"proxy-connection",
        b"proxy-authorization",
        b"proxy-authenticate",
        b"te",
        b"trailer",
        b"upgrade",
        b"expect",
    }
)
FRAMING = frozenset({b"content-length", b"transfer-encoding", b"host"})
Headers = list[tuple[bytes, bytes]]


@dataclass(frozen=True)
class Limits:
    max_request_bytes: int
    max_response_bytes: int
    max_tunnel_bytes: int


@dataclass
class Outcome:
    """What one proxied request did, for its audit row."""

    status: int = 0  # the status the plugin got (0: none yet)
    sent: int = 0  # body bytes to the destination
    received: int = 0  # body bytes from the destination
    error: str = ""  # "" when it ran to its end

    @property
    def started(self) -> bool:
        return self.status != 0


def simple_response(status: int, text: str, headers: Sequence[tuple[str, str]] = ()) -> bytes:
    """A complete response with a short text body (refusals and failures)."""
    body = (text.rstrip("\n") + "\n").encode()
    lines = [
        f"HTTP/1.1 {status} {HTTPStatus(status).phrase}",
        "Content-Type: text/plain; charset=utf-8",
        f"Content-Length: {len(body)}",
        "Connection: close",
        *(f"{name}: {value}" for name, value in headers),
    ]
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


def _without_hop_by_hop(headers: Sequence[tuple[bytes, bytes]]) -> Headers:
    named = {
        token.strip().lower()
        for name, value in headers
        if name.lower() == b"connection"
        for token in value.split(b",")
    } - FRAMING
    return [
        (name, value)
        for name, value in headers
        if name.lower() not in HOP_BY_HOP and name.lower() not in named
    ]


def request_headers(headers: Sequence[tuple[bytes, bytes]], host: bytes) -> Headers:
    """The headers sent to the destination: no hop-by-hop ones, Host = the target."""
    kept = [(n, v) for n, v in _without_hop_by_hop(headers) if n.lower() != b"host"]
    return [(b"host", host), *kept, (b"connection", b"close")]


def response_headers(headers: Sequence[tuple[bytes, bytes]]) -> Headers:
    return [*_without_hop_by_hop(headers), (b"connection", b"close")]


def content_length(headers: Sequence[tuple[bytes, bytes]]) -> int | None:
    for name, value in headers:
        if name.lower() == b"content-length" and value.strip().isdigit():
            return int(value)
    return None


class Client:
    """The plugin's end of one proxy connection (h11 in the server role)."""

    def __init__(self, stream: trio.SocketStream, max_header_bytes: int) -> None:
        self.stream = stream
        self.conn = h11.Connection(h11.SERVER, max_incomplete_event_size=max_header_bytes)

    async def event(self) -> h11.Event | type[h11.PAUSED]:
        while True:
            event = self.conn.next_event()
            if event is not h11.NEED_DATA:
                return event  # type: ignore[return-value]
            self.conn.receive_data(bytes(await self.stream.receive_some(CHUNK)))

    async def head(self) -> h11.Request | None:
        """The request line and headers; None when the plugin closed before sending one.
        h11.RemoteProtocolError for a malformed or oversized head."""
        event = await self.event()
        return event if isinstance(event, h11.Request) else None

    async def send(self, event: h11.Event) -> None:
        data = self.conn.send(event)
        if data:
            await self.stream.send_all(data)

    async def fail(self, outcome: Outcome, status: int, error: str, text: str) -> None:
        """Record `error`; answer `status` unless the response has started (then the
        connection just ends, the plugin sees a cut-off response)."""
        outcome.error = error
        if not outcome.started:
            outcome.status = status
            answer = simple_response(status, text, [("X-Pentarun-Egress-Error", error)])
            await answer_and_close(self.stream, answer)


LINGER_S = 1.0
LINGER_BYTES = 1024 * 1024


async def answer_and_close(
    stream: trio.SocketStream, answer: bytes, *, linger_s: float = LINGER_S
) -> None:
    """Send a final answer, then read and drop what the plugin still sends, for at most
    `linger_s` and LINGER_BYTES, before the caller closes: closing a socket with unread data
    resets it, and the plugin might lose the answer."""
    with contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError, OSError):
        await stream.send_all(answer)
        await stream.send_eof()
        drained = 0
        with trio.move_on_after(linger_s):
            while drained < LINGER_BYTES and (data := await stream.receive_some(CHUNK)):
                drained += len(data)


async def _upstream_event(conn: h11.Connection, upstream: trio.abc.Stream) -> h11.Event:
    while True:
        event = conn.next_event()
        if event is not h11.NEED_DATA and event is not h11.PAUSED:
            return event  # type: ignore[return-value]
        conn.receive_data(bytes(await upstream.receive_some(CHUNK)))


async def forward(
    client: Client,
    request: h11.Request,
    upstream: trio.abc.Stream,
    *,
    path: bytes,
    host: bytes,
    limits: Limits,
    outcome: Outcome,
) -> None:
    """Send `request` (its body streamed, bounded) to `upstream` as `path`, and its response
    (bounded) back to the plugin."""
    up = h11.Connection(h11.CLIENT, max_incomplete_event_size=MAX_RESPONSE_HEAD)
    headers = request_headers(list(request.headers), host)
    await upstream.send_all(
        up.send(h11.Request(method=request.method, target=path, headers=headers))
    )
    if client.conn.they_are_waiting_for_100_continue:
        await client.send(h11.InformationalResponse(status_code=100, headers=[]))
    while True:
        event = await client.event()
        if isinstance(event, h11.Data):
            outcome.sent += len(event.data)
            if outcome.sent > limits.max_request_bytes:
                await client.fail(
                    outcome,
                    413,
                    "request_too_large",
                    f"egress: the request body is over {limits.max_request_bytes} bytes",
                )
                return
            await upstream.send_all(up.send(h11.Data(data=event.data)))
        elif isinstance(event, h11.EndOfMessage):
            await upstream.send_all(up.send(h11.EndOfMessage()))
            break
        else:
            outcome.error = "client_closed"
            return
    await _relay_response(client, up, upstream, limits, outcome)


async def _relay_response(
    client: Client, up: h11.Connection, upstream: trio.abc.Stream, limits: Limits, outcome: Outcome
) -> None:
    while True:
        try:
            event = await _upstream_event(up, upstream)
        except h11.RemoteProtocolError as exc:
            await client.fail(outcome, 502, "bad_upstream_response", f"egress: {exc}")
            return
        if isinstance(event, h11.InformationalResponse):
            continue
        if isinstance(event, h11.Response):
            length = content_length(list(event.headers))
            if length is not None and length > limits.max_response_bytes:
                await client.fail(
                    outcome,
                    502,
                    "response_too_large",
                    f"egress: the response body is over {limits.max_response_bytes} bytes",
                )
                return
            await client.send(
                h11.Response(
                    status_code=event.status_code,
                    headers=response_headers(list(event.headers)),
                    reason=event.reason,
                )
            )
            outcome.status = event.status_code
        elif isinstance(event, h11.Data):
            outcome.received += len(event.data)
            if outcome.received > limits.max_response_bytes:
                outcome.error = "response_too_large"  # the plugin sees a cut-off body
                return
            await client.send(h11.Data(data=event.data))
        elif isinstance(event, h11.EndOfMessage):
            await client.send(h11.EndOfMessage())
            return
        else:  # the destination closed before a complete response
            await client.fail(outcome, 502, "upstream_closed", "egress: the destination closed")
            return


async def tunnel(
    client: Client, upstream: trio.SocketStream, limits: Limits, outcome: Outcome
) -> None:
    """Answer a CONNECT with 200, then carry bytes both ways until both sides end, at most
    `max_tunnel_bytes` in all (then both ends are closed)."""
    await client.stream.send_all(b"HTTP/1.1 200 Connection established\r\n\r\n")
    outcome.status = 200
    leftover, _ = client.conn.trailing_data  # what the plugin sent right after its CONNECT
    budget = limits.max_tunnel_bytes

    async with trio.open_nursery() as nursery:

        async def pump(source: trio.SocketStream, sink: trio.SocketStream, out: bool) -> None:
            first = leftover if out else b""
            try:
                while True:
                    data = first or await source.receive_some(CHUNK)
                    first = b""
                    if not data:
                        with contextlib.suppress(trio.BrokenResourceError, OSError):
                            await sink.send_eof()
                        return
                    if out:
                        outcome.sent += len(data)
                    else:
                        outcome.received += len(data)
                    if outcome.sent + outcome.received > budget:
                        outcome.error = "tunnel_too_large"
                        nursery.cancel_scope.cancel()
                        return
                    await sink.send_all(data)
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                outcome.error = outcome.error or "connection_lost"
                nursery.cancel_scope.cancel()

        nursery.start_soon(pump, client.stream, upstream, True)
        nursery.start_soon(pump, upstream, client.stream, False)
