"""The operator console: server-rendered pages at `/` of the admin app, same origin as the API.

    register(app, services)   its blueprints, template helpers, static files, feed additions

Pages are Jinja templates (templates/), rendered here from views.py's data; fragments of them
refresh through htmx when the live feed says something changed (static/console.js). Every
change an operator makes goes to the JSON API (`/api/...`) from console.js with the session
cookie and the page's CSRF token, so the API's permission checks are the console's: a page
only hides the controls its operator may not use (`can(permission, property_id)`), it never
decides. Routes by area: routes_auth (sign-in/out), routes_plugins (plugins, plugin page,
upload, approval, test runs), routes_admin (properties, cameras, HA keys, operators, trusted
keys), routes_watch (audit and its export, live feed, server status), routes_wizard (a
package's own ui/wizard.html, sandboxed).

Static files (static/) are vendored and pinned: htmx 2.0.4 from the npm registry with its
licence (static/vendor/), and the console's own console.js and console.css. Nothing is built
and nothing is fetched at run time.
"""

from __future__ import annotations

import hashlib
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import msgspec
from quart import Blueprint, Response, render_template, request

from ...store.db import Database
from .. import errorjson
from .auth import Viewer
from .badges import state_class

if TYPE_CHECKING:
    from ..app import AdminApp, Services

STATIC = Path(__file__).resolve().parent / "static"
# the console's templates and static files (served at /static/..., no session needed)
assets = Blueprint(
    "console",
    __name__,
    static_folder="static",
    static_url_path="/static",
    template_folder="templates",
)
NOT_CONSOLE = ("/api/", "/static/")
PROBES = {"/healthz", "/readyz", "/metrics"}


def _version_of(name: str) -> str:
    try:
        return hashlib.sha256((STATIC / name).read_bytes()).hexdigest()[:12]
    except OSError:
        return "0"


# read once at import (the app is built before it serves): cache-busting static URLs
_STATIC_VERSIONS = {
    name: _version_of(name) for name in ("console.js", "console.css", "vendor/htmx-2.0.4.min.js")
}


def static_url(name: str) -> str:
    return f"/static/{name}?v={_STATIC_VERSIONS.get(name, '0')}"


def when(at: float | None) -> str:
    """A UNIX time as the console shows it (UTC)."""
    if at is None:
        return "—"
    return time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(at))


def iso(at: float | None) -> str:
    if at is None:
        return ""
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(at))


def ms(value: float | None) -> str:
    if value is None:
        return "—"
    return f"{value:.1f} ms" if value < 100 else f"{value:.0f} ms"


async def render(
    view: Viewer | None, template: str, *, status: int = 200, **context: Any
) -> Response:
    """A console page (or fragment) for `view`'s operator: never cached (it holds a CSRF
    token), HTML."""
    html = await render_template(
        template,
        view=view,
        op=view.operator if view else None,
        can=view.can if view else (lambda *args, **kwargs: False),
        csrf=view.csrf if view else "",
        path=request.path,
        **context,
    )
    return Response(
        html,
        status=status,
        content_type="text/html; charset=utf-8",
        headers={"Cache-Control": "no-store"},
    )


def see_other(location: str) -> Response:
    """A 303 to a path of this console (after a form post, or to sign in)."""
    return Response("", status=303, headers={"Location": location})


def wants_html() -> bool:
    """Whether an error of this request should be a page rather than JSON: console paths."""
    path = request.path
    return not path.startswith(NOT_CONSOLE) and path not in PROBES


async def error_page(exc: BaseException) -> Response:
    """The console's page for an error: the same status, code and message as the API's."""
    from ..app import current_services  # noqa: PLC0415 - app imports this package

    rendered = errorjson.render(exc)
    error = msgspec.json.decode(rendered.body).get("error", {})
    try:
        from .auth import viewer  # noqa: PLC0415

        view = viewer(current_services())
    except Exception:  # the error page must render whatever broke
        view = None
    response = await render(
        view,
        "console/error.html",
        status=rendered.status,
        code=error.get("code", ""),
        message=error.get("message", ""),
        status_code=rendered.status,
    )
    for name, value in rendered.headers.items():
        response.headers[name] = value
    return response


_WATCHED = "pentarun_console_watched"


def _watch_test_runs(db: Database, services: Services) -> None:
    """Put test runs starting and ending on the live feed (`plugin.test_run`), so a page
    showing a run refreshes when it ends (the store announces them; the feed did not)."""
    if getattr(db, _WATCHED, False):
        return
    setattr(db, _WATCHED, True)
    feed = services.feed

    def observe(kind: str, fields: dict[str, Any]) -> None:
        if kind == "test_run":
            feed.publish({"type": "plugin.test_run", **fields})

    db.observers.append(observe)


def register(app: AdminApp, services: Services) -> None:
    from .routes_admin import bp as admin  # noqa: PLC0415 - routes import the app module
    from .routes_auth import bp as auth  # noqa: PLC0415
    from .routes_plugins import bp as plugins  # noqa: PLC0415
    from .routes_watch import bp as watch  # noqa: PLC0415
    from .routes_wizard import bp as wizard  # noqa: PLC0415

    for blueprint in (assets, auth, plugins, admin, watch, wizard):
        app.register_blueprint(blueprint)
    app.add_template_filter(when, "when")
    app.add_template_filter(iso, "iso")
    app.add_template_filter(ms, "ms")
    app.add_template_filter(state_class, "state_class")
    app.add_template_global(static_url, "static_url")
    _watch_test_runs(services.db, services)


__all__ = ["error_page", "register", "render", "see_other", "wants_html"]
