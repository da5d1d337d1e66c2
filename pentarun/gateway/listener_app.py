"""A plugin listener's ASGI app: what the core does for every request before the plugin sees it.

    create_listener_app(key, manifest, settings, db, actors, streams) -> ASGI app

For each request, in this order:
  1. the body is read (bounded by `max_body_bytes`; a larger one is a 413 that closes the
     connection), so a keep-alive connection stays reusable after any answer;
  2. an address that failed authentication too often is answered 429 (`FailureLimiter`);
  3. the path is matched to a declared route (404/405);
  4. the client is authenticated: an HA key in any of its three forms, or on routes with
     `token_param` a stream token for that camera, whose key must still be live. Unknown,
     revoked or malformed keys and forged, wrong-camera or revoked-key tokens count as failed
     attempts of the client's address; an expired token does not (Home Assistant replays a
     saved URL until someone replaces it);
  5. the key's budget is spent (`RateLimiter`, one budget per key: a stream token spends the
     budget of the key that minted it); the key's own limit, else the listener's;
  6. the JSON body is decoded safely (`bodies.decode_json`: 400 for bad UTF-8, bad JSON or
     nesting deeper than 32);
  7. the request goes to the plugin's actor as a typed `HttpRequest` for the key's property,
     `idempotent` when the manifest says so (`Manifest.is_idempotent(handler, method)`: a GET
     route, or a handler it lists), so the actor may run it again on the next worker.
The plugin's answer (JSON, raw bytes or a stream) goes back with its status and headers
checked by `replies.plugin_head` (a status HTTP cannot carry is a 502 `bad_plugin_reply`;
framing, hop-by-hop and malformed headers are dropped); every error is rendered by
`errorjson.render`, the one mapping the admin app uses too. Every response carries the
rate-limit headers of SPEC §8: the key's budget once the key is known, else the address's
failure budget.

URLs the plugin hands out start with `HttpRequest.base_url`: the listener's `public_url`, else
the address the connection arrived on. The request's `Host` header is never used.

The route table (steps 3 and 7) is the manifest of the actor serving the plugin now, so a
listener kept bound through an upgrade's hand over serves the new version's routes the moment
the new worker takes over; the manifest the listener was opened with stands in while no actor
serves.

A bare ASGI app, no framework: it is the hot path of every Home Assistant request.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Literal, Protocol
from urllib.parse import parse_qs

import msgspec
import trio

from ..config import ListenerConfig
from ..errors import (
    BadPluginReply,
    BadRequest,
    Forbidden,
    PayloadTooLarge,
    RateLimited,
    Unauthorized,
    WorkerUnavailable,
)
from ..ipc.messages import CallParams, HttpReply, HttpRequest, RateLimitInfo, Reply
from ..packages.manifest import Manifest, Route
from ..security import ha_keys
from ..security.stream_tokens import StreamTokens
from ..store import records
from ..store.db import Database
from ..supervisor.streams import StreamReply
from . import errorjson, replies
from .bodies import decode_json
from .listener_routes import CompiledRoute, compile_routes, match
from .ratelimit import Decision, FailureLimiter, Quota, RateLimiter

log = logging.getLogger(__name__)

ASGIMessage = dict[str, Any]
Receive = Callable[[], Awaitable[ASGIMessage]]
Send = Callable[[ASGIMessage], Awaitable[None]]
ASGIApp = Callable[[dict[str, Any], Receive, Send], Awaitable[None]]
MAX_QUERY_FIELDS = 64
COUNTED_TOKEN_REFUSALS = {"invalid", "key_revoked", "wrong_camera"}


class CallTarget(Protocol):
    """What a listener calls: a plugin's actor (`supervisor.actor.WorkerActor`)."""

    async def call(
        self,
        handler: str,
        property_id: str,
        params: CallParams,
        deadline_s: float | None = None,
        *,
        idempotent: bool = False,
    ) -> Reply | HttpReply | StreamReply: ...


class Actors(Protocol):
    """Where a listener finds its plugin's actor (`supervisor.directory.Directory`)."""

    def get(self, key: str) -> CallTarget | None: ...


@dataclass(frozen=True)
class ListenerSettings:
    """A listener's effective settings: its `[listeners]` entry over the manifest's."""

    name: str
    bind: str
    quota: Quota  # per key, unless the key has its own
    public_url: str  # "" = the address each request arrived on
    max_body_bytes: int
    auth_failures: int
    auth_failure_window_s: float

    @staticmethod
    def of(manifest: Manifest, entry: str | ListenerConfig | None) -> ListenerSettings:
        listener = manifest.listener
        assert listener is not None
        config = ListenerConfig() if entry is None else ListenerConfig.of(entry)
        declared = listener.rate_limit
        return ListenerSettings(
            name=listener.name,
            bind=config.bind or f"0.0.0.0:{listener.port}",
            quota=Quota(
                config.rate_limit or declared.requests,
                config.rate_window_s or declared.window_s,
            ),
            public_url=config.public_url.rstrip("/"),
            max_body_bytes=config.max_body_bytes,
            auth_failures=config.auth_failures,
            auth_failure_window_s=config.auth_failure_window_s,
        )


class _Headers:
    """Case-insensitive request headers with `.get`, as the key check expects."""

    def __init__(self, raw: list[tuple[bytes, bytes]]) -> None:
        self._items = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in raw}

    def get(self, name: str, default: str | None = None) -> str | None:
        return self._items.get(name.lower(), default)


@dataclass(frozen=True)
class _Client:
    """Who a request is from, once authenticated."""

    key: records.HaKeyRow
    auth: Literal["key", "stream_token"]


class _Refused(Exception):
    """An error answer with the rate-limit headers that go with it."""

    def __init__(self, error: Exception, headers: dict[str, str]) -> None:
        super().__init__(str(error))
        self.error = error
        self.headers = headers


def _counts_as_failure(exc: Exception) -> bool:
    if isinstance(exc, Unauthorized):
        return True
    if isinstance(exc, Forbidden):  # TokenInvalid among them
        return exc.details.get("reason") in COUNTED_TOKEN_REFUSALS
    return False


def _base_url(scope: dict[str, Any], public_url: str) -> str:
    """The listener's public URL, else the local address this connection arrived on."""
    if public_url:
        return public_url
    server = scope.get("server")
    if not server:
        return ""
    host, port = str(server[0]), server[1]
    if ":" in host:
        host = f"[{host}]"
    scheme = "https" if scope.get("scheme") == "https" else "http"
    return f"{scheme}://{host}" + (f":{port}" if port is not None else "")


def _query(scope: dict[str, Any]) -> dict[str, str]:
    raw = scope.get("query_string", b"").decode("latin-1")
    try:
        parsed = parse_qs(raw, max_num_fields=MAX_QUERY_FIELDS)
    except ValueError:
        raise BadRequest(f"more than {MAX_QUERY_FIELDS} query parameters") from None
    return {name: values[-1] for name, values in parsed.items()}


async def _read_body(scope: dict[str, Any], receive: Receive, limit: int) -> bytes:
    """The whole body, or PayloadTooLarge as soon as it is known to exceed `limit`."""
    declared = _Headers(scope["headers"]).get("content-length")
    if declared is not None and declared.strip().isdigit() and int(declared) > limit:
        raise PayloadTooLarge(f"the request body is larger than {limit} bytes")
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] != "http.request":
            return b"".join(chunks)
        chunk = bytes(message.get("body", b""))
        size += len(chunk)
        if size > limit:
            raise PayloadTooLarge(f"the request body is larger than {limit} bytes")
        chunks.append(chunk)
        if not message.get("more_body", False):
            return b"".join(chunks)


async def _send_answer(
    send: Send, status: int, body: bytes, content_type: str, headers: dict[str, str]
) -> None:
    """An answer of the core's own (an error): its headers are ours, known to be valid."""
    raw = [
        (b"content-type", content_type.encode("latin-1")),
        (b"content-length", str(len(body)).encode()),
    ]
    raw += [(k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in headers.items()]
    await send({"type": "http.response.start", "status": status, "headers": raw})
    await send({"type": "http.response.body", "body": body})


class _ReplyChecker:
    """`replies.plugin_head` for one listener, saying in the log what it refused or dropped:
    each refusal, and each dropped header name once (a plugin answers thousands of times)."""

    MAX_WARNED = 256

    def __init__(self, key: str) -> None:
        self.key = key
        self._warned: set[str] = set()

    def head(
        self, status: int, content_type: str, headers: dict[str, str], extra: dict[str, str]
    ) -> replies.Head:
        try:
            head = replies.plugin_head(status, content_type, headers, extra)
        except BadPluginReply as exc:
            log.warning("plugin %s: %s", self.key, exc.message)
            raise
        fresh = [name for name in head.dropped if name not in self._warned]
        if fresh and len(self._warned) < self.MAX_WARNED:
            self._warned.update(fresh)
            log.warning("plugin %s: reply headers dropped: %s", self.key, ", ".join(fresh))
        return head


async def _send_reply(
    send: Send, checker: _ReplyChecker, reply: Reply | HttpReply, extra: dict[str, str]
) -> None:
    if isinstance(reply, HttpReply):
        head = checker.head(reply.status, reply.content_type, reply.headers, extra)
        body = b"" if head.bodiless else reply.body
        raw = head.asgi(len(body))
        await send({"type": "http.response.start", "status": head.status, "headers": raw})
        await send({"type": "http.response.body", "body": body})
    else:
        await _send_answer(send, 200, msgspec.json.encode(reply.value), "application/json", extra)


async def _send_error(send: Send, exc: Exception, extra: dict[str, str]) -> None:
    rendered = errorjson.render(exc)
    headers = {**extra, **rendered.headers}
    if isinstance(exc, PayloadTooLarge):
        headers["Connection"] = "close"  # the rest of the body is never read
    await _send_answer(send, rendered.status, rendered.body, rendered.content_type, headers)


async def _send_stream(
    send: Send, receive: Receive, reply: StreamReply, head: replies.Head
) -> None:
    """Chunks until the stream ends or the client leaves; then the worker is told to stop."""
    await send({"type": "http.response.start", "status": head.status, "headers": head.asgi(None)})
    try:
        async with trio.open_nursery() as nursery:

            async def watch_disconnect() -> None:
                while (await receive())["type"] != "http.disconnect":
                    pass
                nursery.cancel_scope.cancel()

            nursery.start_soon(watch_disconnect)
            async for chunk in reply.chunks():
                await send({"type": "http.response.body", "body": chunk, "more_body": True})
            await send({"type": "http.response.body", "body": b""})
            nursery.cancel_scope.cancel()
    finally:
        reply.close()


def create_listener_app(
    key: str,
    manifest: Manifest,
    settings: ListenerSettings,
    *,
    db: Database,
    actors: Actors,
    streams: StreamTokens,
    clock: Callable[[], float] = trio.current_time,
) -> ASGIApp:
    """A bare ASGI app: one route table, no framework between the socket and the worker."""
    table: list[tuple[Manifest, list[CompiledRoute]]] = [(manifest, compile_routes(manifest))]
    budgets = RateLimiter()
    failures = FailureLimiter(settings.auth_failures, settings.auth_failure_window_s)
    checker = _ReplyChecker(key)

    def routes_of(actor: CallTarget | None) -> tuple[Manifest, list[CompiledRoute]]:
        """The serving actor's manifest and its routes (compiled once per manifest)."""
        served = getattr(actor, "manifest", None)
        if not isinstance(served, Manifest):
            served = manifest
        if table[0][0] is not served:
            table[0] = (served, compile_routes(served))
        return table[0]

    async def app(scope: dict[str, Any], receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            while True:
                message = await receive()
                if message["type"] == "lifespan.startup":
                    await send({"type": "lifespan.startup.complete"})
                elif message["type"] == "lifespan.shutdown":
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        if scope["type"] != "http":
            return
        actor = actors.get(key)
        served, routes = routes_of(actor)
        try:
            answer, extra = await admit(scope, receive, routes)
        except _Refused as refused:
            await _send_error(send, refused.error, refused.headers)
            return
        route, client, request = answer
        try:
            actor = actor or actors.get(key)  # one may have started while the body arrived
            if actor is None:
                raise WorkerUnavailable(f"plugin {key!r} is not running", {"retry_after_s": 1})
            reply = await actor.call(
                route.handler,
                client.key.property_id,
                request,
                idempotent=served.is_idempotent(route.handler, route.method),
            )
        except Exception as exc:  # errorjson.render: the plugin's or ours; others are 500
            await _send_error(send, exc, extra)
            return
        if isinstance(reply, StreamReply):
            start = reply.start
            try:
                head = checker.head(start.status, start.content_type, start.headers, extra)
                if head.bodiless:
                    raise BadPluginReply(f"the plugin streamed a body with status {head.status}")
            except BadPluginReply as exc:
                reply.close()
                await _send_error(send, exc, extra)
                return
            await _send_stream(send, receive, reply, head)
            return
        try:
            await _send_reply(send, checker, reply, extra)
        except BadPluginReply as exc:  # raised before anything was sent
            await _send_error(send, exc, extra)

    async def admit(
        scope: dict[str, Any], receive: Receive, routes: list[CompiledRoute]
    ) -> tuple[tuple[Route, _Client, HttpRequest], dict[str, str]]:
        """Steps 1-6 of the module docstring; _Refused with the answer's headers otherwise."""
        address = str((scope.get("client") or ("unknown",))[0])
        headers: dict[str, str] = {}
        try:
            body = await _read_body(scope, receive, settings.max_body_bytes)
            now = clock()
            blocked = failures.blocked(address, now)
            if blocked is not None:
                headers = blocked.headers()
                raise RateLimited(
                    "too many failed authentications from this address",
                    {"retry_after_s": blocked.reset_s},
                )
            query = _query(scope)
            route, path_params = match(routes, scope["method"], scope["path"])
            try:
                client = authenticate(route, path_params, query, _Headers(scope["headers"]))
            except Exception as exc:
                if _counts_as_failure(exc):
                    headers = failures.failed(address, now).headers()
                raise
            quota = settings.quota
            if client.key.rate_limit is not None:
                quota = Quota(client.key.rate_limit.requests, client.key.rate_limit.window_s)
            decision: Decision = budgets.hit(f"key:{client.key.id}", now, quota)
            headers = decision.headers()
            if not decision.allowed:
                raise RateLimited(
                    f"more than {quota.requests} requests in {quota.window_s:g} s for this key",
                    {"retry_after_s": decision.reset_s},
                )
            payload = decode_json(body, what="request body") if body else None
        except Exception as exc:
            if not headers:
                headers = failures.status(address, clock()).headers()
            raise _Refused(exc, headers) from None
        request = HttpRequest(
            method=route.method,
            path=scope["path"],
            path_params=path_params,
            query=query,
            body=payload,
            base_url=_base_url(scope, settings.public_url),
            auth=client.auth,
            caller=(
                streams.sign_caller(client.key.id, client.key.property_id)
                if client.auth == "key"
                else ""
            ),
            rate_limit=RateLimitInfo(quota.requests, quota.window_s),
        )
        return (route, client, request), headers

    def authenticate(
        route: Route, path_params: dict[str, str], query: dict[str, str], headers: _Headers
    ) -> _Client:
        token = query.get("token")
        if route.token_param and token and ha_keys.presented_key(headers) is None:
            camera = path_params.get(route.token_param)
            _, key = ha_keys.check_stream_token(db, streams, token, camera)
            return _Client(key, "stream_token")
        return _Client(ha_keys.authenticate(db, headers), "key")

    return app
