"""Console pages of plugins: the table, a plugin's page and its sections, upload, approval,
test runs. Each section of the plugin page is also a fragment (`/plugins/<key>/part/<name>`)
that htmx re-fetches when the live feed reports a change of that plugin.

    GET /                                   the plugins table (also /plugins)
    GET /plugins/part/rows                  its rows
    GET /plugins/<key>/part/row             one row ("" once the plugin is gone)
    GET /plugins/<key>                      the plugin page
    GET /plugins/<key>/part/<section>       overview, properties, tests, timeline,
                                            performance, progress, approval
    GET /plugins/<key>/tests/<run_id>       a test run, per case by gate
    GET /upload                             upload a package (?plugin=<key>: a new version)
"""

from __future__ import annotations

from typing import Any

from quart import Blueprint, Response, request

from ...errors import NotFound
from ...security.operators import MANAGE_PLUGINS, READ
from ...store import records
from ..app import current_services
from ..params import plugin_key, query_plugin, token_id
from . import render, see_other, views
from .auth import Viewer, page

bp = Blueprint("console_plugins", __name__)

SECTIONS = {
    "overview": "console/plugin/_overview.html",
    "properties": "console/plugin/_properties.html",
    "tests": "console/plugin/_tests.html",
    "timeline": "console/plugin/_timeline.html",
    "performance": "console/plugin/_performance.html",
    "progress": "console/plugin/_progress.html",
    "approval": "console/plugin/_approval.html",
    "config": "console/plugin/_config.html",
}


@bp.get("/")
@page(READ)
async def home(view: Viewer) -> Response:
    return await render(view, "console/plugins.html", rows=views.plugin_rows(current_services()))


@bp.get("/plugins")
async def plugins_alias() -> Response:
    return see_other("/")


@bp.get("/plugins/part/rows")
@page(READ)
async def rows(view: Viewer) -> Response:
    return await render(
        view, "console/plugins/_rows.html", rows=views.plugin_rows(current_services())
    )


@bp.get("/plugins/<key>/part/row")
@page(READ)
async def row(view: Viewer, key: str) -> Response:
    found = views.one_row(current_services(), plugin_key(key))
    if found is None:
        return await render(view, "console/plugins/_gone.html")
    return await render(view, "console/plugins/_row.html", row=found)


@bp.get("/plugins/<key>")
@page(READ)
async def plugin(view: Viewer, key: str) -> Response:
    services = current_services()
    key = plugin_key(key)
    services.registry.plugin(key)  # 404 for an unknown plugin
    data = views.plugin_page(services, key, view.operator)
    open_wizard = request.args.get("wizard") == "1"
    return await render(view, "console/plugin.html", open_wizard=open_wizard, **data)


def _section(key: str, name: str, view: Viewer) -> dict[str, Any]:
    services = current_services()
    if name == "overview":
        return views.overview(services, key)
    if name == "properties":
        return {
            **views.overview(services, key),
            "properties": views.visible_properties(services, view.operator),
        }
    if name == "tests":
        return {"tests": views.tests(services, key)}
    if name == "timeline":
        return {"timeline": views.timeline(services, key)}
    if name == "performance":
        return {"performance": views.performance(services, key)}
    if name == "progress":
        return {"progress": views.pipeline(services, key)}
    if name == "config":
        return {"configuration": views.configuration(services, key)}
    return {"approval": views.approval(services, key)}


@bp.get("/plugins/<key>/part/<name>")
@page(READ)
async def section(view: Viewer, key: str, name: str) -> Response:
    key = plugin_key(key)
    template = SECTIONS.get(name)
    if template is None:
        raise NotFound(f"no section {name[:40]!r} of a plugin page")
    services = current_services()
    if name == "progress" and records.get_plugin(services.db, key) is None:
        return await render(view, "console/plugin/_progress_gone.html", key=key)
    services.registry.plugin(key)  # 404 for an unknown plugin
    return await render(view, template, key=key, **_section(key, name, view))


@bp.get("/plugins/<key>/tests/<run_id>")
@page(READ)
async def test_run(view: Viewer, key: str, run_id: str) -> Response:
    key, run_id = plugin_key(key), token_id(run_id, "test run")
    services = current_services()
    run = views.test_run(services, key, run_id)
    if run is None:
        raise NotFound(f"no test run {run_id!r} of {key!r}")
    plugin_row = services.registry.plugin(key)
    template = "console/test_run.html"
    if request.args.get("part") == "1":
        template = "console/plugin/_run.html"
    return await render(view, template, key=key, plugin=plugin_row, run=run)


@bp.get("/upload")
@page(MANAGE_PLUGINS)
async def upload(view: Viewer) -> Response:
    target = query_plugin(request.args)
    existing = None
    if target is not None:
        existing = views.one_row(current_services(), target)
    return await render(view, "console/upload.html", target=target, existing=existing)
