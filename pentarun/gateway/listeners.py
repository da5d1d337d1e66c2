"""Plugin listeners: a port per plugin that declares one, bound while the plugin is enabled.

For every request the core, not the plugin: matches it to a declared route, authenticates it
(a Home Assistant key in any of its three forms, or on routes with `token_param` a stream
token whose camera is that path parameter), rate-limits it per client with the rate-limit
headers on every response, and forwards it to the plugin's actor for the key's property. The
plugin's answer (JSON, raw bytes or a stream) goes back as it is; its errors stay JSON.

Each listener is a bare ASGI app on hypercorn, with no web framework in between: it is the hot
path of every Home Assistant request (bench/ha_port.py measures it against a bare quart-trio
app). The request body (at most 1 MiB) is always read first, so a keep-alive connection is
reusable after any answer.

    params sent to the handler: {"path": {...}, "query": {...}, "body": <JSON or None>,
                                  "base_url": "http://host:port", "auth": "key"|"stream_token"}
"""

from __future__ import annotations

import logging
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs

import msgspec
import trio
from hypercorn.config import Config as HypercornConfig
from hypercorn.trio import serve as hypercorn_serve

from ..errors import (
    BadRequest,
    MethodNotAllowed,
    NotFound,
    PayloadTooLarge,
    PentarunError,
    RateLimited,
    WorkerUnavailable,
)
from ..ipc.messages import HttpReply, Reply
from ..packages.manifest import Manifest, Route
from ..security import ha_keys
from ..security.stream_tokens import StreamTokens
from ..store import records
from ..store.db import Database
from ..supervisor.streams import StreamReply
from ..supervisor.supervisor import Supervisor
from .ratelimit import RateLimiter

log = logging.getLogger(__name__)

PARAM = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*)\}")


@dataclass(frozen=True)
class CompiledRoute:
    route: Route
    pattern: re.Pattern[str]


def compile_routes(manifest: Manifest) -> list[CompiledRoute]:
    compiled = []
    for route in manifest.routes:
        regex = "".join(
            f"(?P<{part}>[^/]+)" if i % 2 else re.escape(part)
            for i, part in enumerate(PARAM.split(route.path))
        )
        compiled.append(CompiledRoute(route, re.compile(f"^{regex}$")))
    return compiled


def match(routes: list[CompiledRoute], method: str, path: str) -> tuple[Route, dict[str, str]]:
    allowed = False
    for compiled in routes:
        found = compiled.pattern.match(path)
        if found is None:
            continue
        allowed = True
        if compiled.route.method == method:
            return compiled.route, found.groupdict()
    if allowed:
        raise MethodNotAllowed(f"{method} is not allowed on {path}")
    raise NotFound(f"no route {path}")


MAX_BODY = 1024 * 1024
ASGIMessage = dict[str, Any]
Receive = Callable[[], Awaitable[ASGIMessage]]
Send = Callable[[ASGIMessage], Awaitable[None]]


class _Headers:
    """Case-insensitive request headers with `.get`, as the key check expects."""

    def __init__(self, raw: list[tuple[bytes, bytes]]) -> None:
        self._items = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in raw}

    def get(self, name: str, default: str | None = None) -> str | None:
        return self._items.get(name.lower(), default)


@dataclass
class _Answer:
    status: int
    body: bytes
    content_type: str = "application/json"
    headers: dict[str, str] = field(default_factory=dict)


def _error(exc: PentarunError) -> _Answer:
    answer = _Answer(exc.http_status, msgspec.json.encode(exc.to_json()))
    if exc.http_status == 401:
        answer.headers["WWW-Authenticate"] = 'Bearer realm="pentarun"'
    return answer


def _answer(reply: Reply | HttpReply) -> _Answer:
    if isinstance(reply, HttpReply):
        return _Answer(reply.status, reply.body, reply.content_type, dict(reply.headers))
    return _Answer(200, msgspec.json.encode(reply.value))


async def _send_answer(send: Send, answer: _Answer, extra: dict[str, str]) -> None:
    headers = [
        (b"content-type", answer.content_type.encode()),
        (b"content-length", str(len(answer.body)).encode()),
    ]
    headers += [(k.lower().encode(), v.encode()) for k, v in {**answer.headers, **extra}.items()]
    await send({"type": "http.response.start", "status": answer.status, "headers": headers})
    await send({"type": "http.response.body", "body": answer.body})


async def _send_stream(
    send: Send, receive: Receive, reply: StreamReply, extra: dict[str, str]
) -> None:
    """Chunks until the stream ends or the client leaves; then the worker is told to stop."""
    start = reply.start
    headers = [(b"content-type", start.content_type.encode())]
    headers += [(k.lower().encode(), v.encode()) for k, v in {**start.headers, **extra}.items()]
    await send({"type": "http.response.start", "status": start.status, "headers": headers})
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
    key: str, manifest: Manifest, db: Database, supervisor: Supervisor, streams: StreamTokens
) -> Callable[[dict[str, Any], Receive, Send], Awaitable[None]]:
    """A bare ASGI app: one route table, no framework between the socket and the worker."""
    assert manifest.listener is not None
    routes = compile_routes(manifest)
    limit = manifest.listener.rate_limit
    limiter = RateLimiter(limit.requests, limit.window_s)

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
        await handle(scope, receive, send)

    async def read_body(receive: Receive) -> bytes:
        body = b""
        while True:
            message = await receive()
            if message["type"] != "http.request":
                return body
            body += bytes(message.get("body", b""))
            if len(body) > MAX_BODY:
                raise PayloadTooLarge(f"the request body is larger than {MAX_BODY} bytes")
            if not message.get("more_body", False):
                return body

    async def handle(scope: dict[str, Any], receive: Receive, send: Send) -> None:
        headers = _Headers(scope["headers"])
        query = {k: v[-1] for k, v in parse_qs(scope["query_string"].decode("latin-1")).items()}
        client = (scope.get("client") or ("unknown",))[0]
        try:
            body = await read_body(receive)  # always, so the connection stays reusable
            route, path_params = match(routes, scope["method"], scope["path"])
            token = query.get("token")
            if route.token_param and token and ha_keys.presented_key(headers) is None:
                claims = streams.verify(token, path_params.get(route.token_param))
                property_id, auth, client = claims["prop"], "stream_token", f"token:{claims['jti']}"
            else:
                key_row = ha_keys.authenticate(db, headers)
                property_id, auth, client = key_row.property_id, "key", f"key:{key_row.id}"
        except PentarunError as exc:
            decision = limiter.hit(f"addr:{client}", trio.current_time())
            await _send_answer(send, _error(exc), decision.headers())
            return
        decision = limiter.hit(client, trio.current_time())
        extra = decision.headers()
        if not decision.allowed:
            limited = RateLimited(f"more than {limiter.limit} requests in {limiter.window_s:g} s")
            await _send_answer(
                send, _error(limited), {**extra, "Retry-After": str(decision.reset_s)}
            )
            return
        host = headers.get("host") or "{}:{}".format(*scope["server"])
        try:
            actor = supervisor.directory.get(key)
            if actor is None:
                raise WorkerUnavailable(f"plugin {key!r} is not running")
            try:
                payload = msgspec.json.decode(body) if body else None
            except msgspec.DecodeError:
                raise BadRequest("the request body is not valid JSON") from None
            params: dict[str, Any] = {
                "path": path_params,
                "query": query,
                "body": payload,
                "base_url": f"{scope.get('scheme', 'http')}://{host}",
                "auth": auth,
            }
            reply = await actor.call(route.handler, property_id, params)
        except PentarunError as exc:
            await _send_answer(send, _error(exc), extra)
            return
        if isinstance(reply, StreamReply):
            await _send_stream(send, receive, reply, extra)
        else:
            await _send_answer(send, _answer(reply), extra)

    return app


def _leaf(exc: BaseException) -> BaseException:
    while isinstance(exc, BaseExceptionGroup) and exc.exceptions:
        exc = exc.exceptions[0]
    return exc


@dataclass
class _Open:
    name: str
    url: str
    shutdown: trio.Event
    done: trio.Event = field(default_factory=trio.Event)


class ListenerManager:
    """Binds each enabled plugin's listener and tells `on_change` the bound URLs."""

    def __init__(
        self,
        db: Database,
        supervisor: Supervisor,
        streams: StreamTokens,
        binds: dict[str, str],
        on_change: Callable[[dict[str, str]], None],
    ) -> None:
        self.db, self.supervisor, self.streams = db, supervisor, streams
        self.binds = binds
        self.on_change = on_change
        self._open: dict[str, _Open] = {}
        self._nursery: trio.Nursery | None = None

    @property
    def urls(self) -> dict[str, str]:
        return {o.name: o.url for o in self._open.values()}

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            task_status.started()
            await trio.sleep_forever()

    async def open(self, key: str, manifest: Manifest) -> None:
        listener = manifest.listener
        if listener is None or key in self._open:
            return
        assert self._nursery is not None
        app: Any = create_listener_app(key, manifest, self.db, self.supervisor, self.streams)
        config = HypercornConfig()
        config.bind = [self.binds.get(listener.name, f"0.0.0.0:{listener.port}")]
        config.graceful_timeout = 1.0
        config.accesslog = None
        shutdown = trio.Event()
        entry = _Open(listener.name, "", shutdown)

        async def serve(task_status: trio.TaskStatus[list[str]]) -> None:
            try:
                await hypercorn_serve(
                    app, config, shutdown_trigger=shutdown.wait, task_status=task_status
                )
            finally:
                entry.done.set()

        failure = ""
        try:
            binds: list[str] = await self._nursery.start(serve)
        except* OSError as group:  # e.g. the port is taken: the server and the plugin go on
            failure = f"cannot bind {config.bind[0]}: {_leaf(group)}"
        if failure:
            log.error("plugin %s: listener %s: %s", key, listener.name, failure)
            records.record_event(self.db, key, "listener_failed", reason=failure)
            return
        entry.url = next((b for b in binds if b.startswith("http://")), binds[0])
        self._open[key] = entry
        records.record_event(self.db, key, "listener_opened", reason=entry.url)
        self.on_change(self.urls)

    async def close(self, key: str) -> None:
        entry = self._open.pop(key, None)
        if entry is None:
            return
        entry.shutdown.set()
        with trio.move_on_after(5):
            await entry.done.wait()
        records.record_event(self.db, key, "listener_closed", reason=entry.url)
        self.on_change(self.urls)
