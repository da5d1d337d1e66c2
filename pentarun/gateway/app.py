"""The admin app: what routes get, who is asking, what they sent, and how errors answer.

    create_admin_app(services) -> AdminApp

Routes live in one module per area (routes_plugins, routes_workers, routes_properties,
routes_operators, routes_trust, routes_watch), each a Blueprint of thin handlers: parse
(`params.py`, `parse_body`), authorize (`@operator(permission)`, then `require` per
property), call the module that owns the rule, render (`json_response`).

The operator console (gateway/console/) is served by the same app at `/`: its pages need a
signed-in session, and its changes go through these same /api routes (the session cookie
instead of the bearer token, with a CSRF token), so the console can do exactly what the API
lets the operator do, decided here and nowhere else.

Invariants:
- every /api route needs an operator: a bearer token, or the console's session cookie
  (console/auth.py), which a change (any method but GET, HEAD, OPTIONS) may use only with the
  session's CSRF token from the console's own origin; console pages need a signed-in session;
  only /healthz, /readyz, /metrics, /signin and the console's /static files need neither;
- every answer carries the security headers (`SECURITY_HEADERS`: a CSP without inline script,
  no framing, no referrer); a route that sets its own CSP (a plugin's wizard) keeps it;
- a request body is bounded by its route's limit before a byte of it is kept (`@body_limit`:
  JSON routes `server.max_json_body_bytes`, the config route `server.max_config_body_bytes`,
  the upload `install.max_package_bytes`); a bigger one is a 413 (gateway/http.py);
- request bodies are decoded from bytes by `bodies.decode_json` (bounded depth, typed,
  named fields), so no malformed body is a 500;
- every error becomes JSON in exactly one place, `errorjson.render`;
- the gateway never imports the runtime: the runtime builds `Services` and hands it here.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from functools import wraps
from pathlib import Path
from typing import Any, Literal, TypeVar

import msgspec
import trio
from quart import Response, current_app
from quart_trio import QuartTrio
from werkzeug.exceptions import HTTPException, RequestEntityTooLarge

from .. import __version__
from ..cameras.hub import CameraHub
from ..config import Config
from ..lanes.events import EventLane
from ..lanes.feed import Feed
from ..packages.service import Installs
from ..recordings.service import Recordings
from ..registry import Registry
from ..sandbox.launcher import Sandbox
from ..security.operators import PERMISSIONS, require
from ..store import records
from ..store.db import Database
from ..supervisor.supervisor import Supervisor
from . import errorjson
from .bodies import decode_json
from .console.auth import request_operator
from .http import bounded_request_class, drain_unread_bodies, payload_too_large, read_body

S = TypeVar("S")
Handler = Callable[..., Awaitable[Response]]
H = TypeVar("H", bound=Callable[..., Any])
BodyKind = Literal["json", "config", "package"]

MULTIPART_SLACK = 1024 * 1024  # room for a multipart upload's framing around the zip
_BODY_KIND = "pentarun_body_kind"

CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data: blob:; "
    "frame-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'"
)
SECURITY_HEADERS = {
    "Content-Security-Policy": CSP,
    "Referrer-Policy": "no-referrer",
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
}


@dataclass
class Services:
    """What the admin routes are given: the runtime's parts, built by pentarun/runtime.py."""

    config: Config
    data_dir: Path
    db: Database
    supervisor: Supervisor
    events: EventLane
    registry: Registry
    installs: Installs
    feed: Feed
    sandbox: Sandbox
    ready: trio.Event = field(default_factory=trio.Event)
    admin_url: str = ""
    listeners: dict[str, str] = field(default_factory=dict)
    demo_key: str = ""
    started_at: float = field(default_factory=time.time)
    cameras: CameraHub = field(default_factory=CameraHub)  # not running: demo cameras only
    recordings: Recordings | None = None  # None: this server keeps no recordings

    def write_run_file(self) -> None:
        """`run.json`: pid and the URLs actually bound; replaced atomically."""
        data = {
            "pid": os.getpid(),
            "version": __version__,
            "admin_url": self.admin_url,
            "listeners": self.listeners,
        }
        tmp = self.data_dir / "run.json.tmp"
        tmp.write_text(json.dumps(data, indent=2) + "\n")
        tmp.replace(self.data_dir / "run.json")

    def remove_run_file(self) -> None:
        (self.data_dir / "run.json").unlink(missing_ok=True)


class AdminApp(QuartTrio):
    def __init__(self, services: Services) -> None:
        # no app-wide /static (it would serve the working directory's static/): the console's
        # blueprint serves its own files there
        super().__init__("pentarun.admin", static_folder=None)
        self.services = services


def current_services() -> Services:
    """The Services of the admin app serving the current request."""
    services = getattr(current_app, "services", None)
    if not isinstance(services, Services):
        raise RuntimeError("not inside a request of the admin app")
    return services


def operator(permission: str) -> Callable[[Handler], Handler]:
    """Require an operator (bearer token or console session, see the module docstring)
    whose role has `permission`; the route gets it as `op`.

    Routes acting on one property also call `require(op, permission, pid)`.
    """

    def wrap(handler: Handler) -> Handler:
        @wraps(handler)
        async def checked(**kwargs: Any) -> Response:
            op = request_operator(current_services())
            if permission not in PERMISSIONS.get(op.role, frozenset()):
                require(op, permission)  # raises Forbidden with the reason
            return await handler(op=op, **kwargs)

        return checked

    return wrap


def body_limit(kind: BodyKind) -> Callable[[H], H]:
    """Give a route another body limit than the JSON one (see the module docstring)."""

    def mark(handler: H) -> H:
        setattr(handler, _BODY_KIND, kind)
        return handler

    return mark


def actor_name(op: records.OperatorRow) -> str:
    """How audit records and the install service name an operator."""
    return f"operator:{op.name}"


async def parse_body(kind: type[S], *, what: str = "request body") -> S:
    """The request body as `kind` (an empty body is `{}`), or 400/413 saying what is wrong."""
    raw = await read_body()
    return decode_json(raw or b"{}", kind, what=what)


def json_response(data: Any, status: int = 200) -> Response:
    return Response(msgspec.json.encode(data), status=status, content_type="application/json")


def body_limits(config: Config) -> dict[BodyKind, int]:
    return {
        "json": config.server.max_json_body_bytes,
        "config": config.server.max_config_body_bytes,
        "package": config.install.max_package_bytes + MULTIPART_SLACK,
    }


def _route_limits(app: AdminApp) -> Callable[[str, str], int]:
    """method, path -> the body limit of the route they reach (the JSON one if none)."""
    limits = body_limits(app.services.config)
    adapter = app.url_map.bind("localhost")

    def limit_for(method: str, path: str) -> int:
        try:
            rule, _ = adapter.match(path, method, return_rule=True)
        except HTTPException:  # no such route, wrong method, a redirect
            return limits["json"]
        view = app.view_functions.get(rule.endpoint)
        kind: BodyKind = getattr(view, _BODY_KIND, "json")
        return limits[kind]

    return limit_for


def create_admin_app(services: Services) -> AdminApp:
    # the route modules import this one: imported here, once the app is being built
    from . import console  # noqa: PLC0415
    from .routes_egress import bp as egress  # noqa: PLC0415
    from .routes_live import bp as live  # noqa: PLC0415
    from .routes_operators import bp as operators  # noqa: PLC0415
    from .routes_plugins import bp as plugins  # noqa: PLC0415
    from .routes_properties import bp as properties  # noqa: PLC0415
    from .routes_recordings import bp as recordings  # noqa: PLC0415
    from .routes_trust import bp as trust  # noqa: PLC0415
    from .routes_watch import bp as watch  # noqa: PLC0415
    from .routes_workers import bp as workers  # noqa: PLC0415

    app = AdminApp(services)
    app.config["MAX_CONTENT_LENGTH"] = max(body_limits(services.config).values())
    blueprints = (watch, plugins, workers, properties, recordings, operators, trust, egress, live)
    for blueprint in blueprints:
        app.register_blueprint(blueprint)
    console.register(app, services)
    app.request_class = bounded_request_class(_route_limits(app))
    drain_unread_bodies(app)

    @app.after_request
    async def security_headers(response: Response) -> Response:
        for name, value in SECURITY_HEADERS.items():
            response.headers.setdefault(name, value)
        return response

    @app.errorhandler(Exception)
    async def render_error(exc: Exception) -> Response:
        if isinstance(exc, RequestEntityTooLarge):
            exc = payload_too_large()
        if console.wants_html():
            return await console.error_page(exc)
        rendered = errorjson.render(exc)
        return Response(
            rendered.body,
            status=rendered.status,
            headers=rendered.headers,
            content_type=rendered.content_type,
        )

    return app


__all__ = [
    "AdminApp",
    "Services",
    "actor_name",
    "body_limit",
    "create_admin_app",
    "current_services",
    "json_response",
    "operator",
    "parse_body",
]
