"""Plugin listeners: a port per plugin that declares one, bound while the plugin is enabled.

For every request the core, not the plugin: matches it to a declared route, authenticates it
(a Home Assistant key in any of its three forms, or on routes with `token_param` a stream
token whose camera is that path parameter), rate-limits it per client with the rate-limit
headers on every response, and forwards it to the plugin's actor for the key's property. The
plugin's answer (JSON or raw bytes) goes back as it is; its errors stay JSON.

    params sent to the handler: {"path": {...}, "query": {...}, "body": <JSON or None>,
                                  "base_url": "http://host:port", "auth": "key"|"stream_token"}
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import msgspec
import trio
from hypercorn.config import Config as HypercornConfig
from hypercorn.trio import serve as hypercorn_serve
from quart import Response, request
from quart_trio import QuartTrio

from ..errors import NotFound, PentarunError, WorkerUnavailable
from ..packages.manifest import Manifest, Route
from ..security import ha_keys
from ..security.stream_tokens import StreamTokens
from ..store import records
from ..store.db import Database
from ..supervisor.supervisor import Supervisor
from .http import drain_unread_bodies, reply_response
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


class MethodNotAllowed(PentarunError):
    status, code = 405, "method_not_allowed"


def _error(exc: PentarunError) -> Response:
    response = Response(
        msgspec.json.encode(exc.to_json()), status=exc.http_status, content_type="application/json"
    )
    if exc.http_status == 401:
        response.headers["WWW-Authenticate"] = 'Bearer realm="pentarun"'
    return response


def create_listener_app(
    key: str, manifest: Manifest, db: Database, supervisor: Supervisor, streams: StreamTokens
) -> QuartTrio:
    assert manifest.listener is not None
    app = QuartTrio(f"pentarun.listener.{key}")
    app.config["MAX_CONTENT_LENGTH"] = 1024 * 1024
    drain_unread_bodies(app)
    routes = compile_routes(manifest)
    limit = manifest.listener.rate_limit
    limiter = RateLimiter(limit.requests, limit.window_s)

    async def dispatch(path: str) -> Response:
        client = request.remote_addr or "unknown"
        try:
            route, path_params = match(routes, request.method, "/" + path)
            token = request.args.get("token")
            if route.token_param and token and ha_keys.presented_key(request.headers) is None:
                claims = streams.verify(token, path_params.get(route.token_param))
                property_id, auth, client = claims["prop"], "stream_token", f"token:{claims['jti']}"
            else:
                key_row = ha_keys.authenticate(db, request.headers)
                property_id, auth, client = key_row.property_id, "key", f"key:{key_row.id}"
        except PentarunError as exc:
            decision = limiter.hit(f"addr:{client}", trio.current_time())
            response = _error(exc)
            response.headers.update(decision.headers())
            return response
        decision = limiter.hit(client, trio.current_time())
        if not decision.allowed:
            response = _error(
                RateLimited(f"more than {limiter.limit} requests in {limiter.window_s:g} s")
            )
            response.headers["Retry-After"] = str(decision.reset_s)
        else:
            response = await forward(route, path_params, property_id, auth)
        response.headers.update(decision.headers())
        return response

    async def forward(
        route: Route, path_params: dict[str, str], property_id: str, auth: str
    ) -> Response:
        actor = supervisor.actors.get(key)
        try:
            if actor is None:
                raise WorkerUnavailable(f"plugin {key!r} is not running")
            body = await request.get_data(as_text=False)
            try:
                payload = msgspec.json.decode(body) if body else None
            except msgspec.DecodeError:
                raise _BadJson("the request body is not valid JSON") from None
            params: dict[str, Any] = {
                "path": path_params,
                "query": dict(request.args),
                "body": payload,
                "base_url": request.host_url.rstrip("/"),
                "auth": auth,
            }
            reply = await actor.call(route.handler, property_id, params)
        except PentarunError as exc:
            return _error(exc)
        return reply_response(reply)

    app.add_url_rule(
        "/<path:path>", "dispatch", dispatch, methods=["GET", "POST", "PUT", "PATCH", "DELETE"]
    )

    @app.errorhandler(404)
    async def not_found(exc: Exception) -> Response:
        return _error(NotFound(f"no route {request.path}"))

    return app


def _leaf(exc: BaseException) -> BaseException:
    while isinstance(exc, BaseExceptionGroup) and exc.exceptions:
        exc = exc.exceptions[0]
    return exc


class RateLimited(PentarunError):
    status, code = 429, "rate_limited"


class _BadJson(PentarunError):
    status, code = 400, "bad_request"


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
        app = create_listener_app(key, manifest, self.db, self.supervisor, self.streams)
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
