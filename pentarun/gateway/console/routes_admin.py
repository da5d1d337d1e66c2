"""Console pages of PentaVision data and of who may act: properties with their cameras and
Home Assistant keys, operators, trusted publisher keys. Changes go to the API from
console.js; these routes only render (lists are also fragments, refreshed after a change).

    GET /properties                       properties (create one)
    GET /properties/<pid>                 its cameras (snapshots, live preview), HA keys,
                                          the plugins serving it
    GET /properties/<pid>/part/<name>     cameras, keys
    GET /operators (+ /operators/part)    operators (create with a role, remove)
    GET /trust (+ /trust/part)            trusted publisher keys (add, remove)
"""

from __future__ import annotations

from typing import Any

import trio
from quart import Blueprint, Response

from ...errors import NotFound
from ...security.operators import OPERATORS, READ, ROLES, TRUST, can_see_property
from ...store import records
from ..app import current_services
from ..params import resource_id
from ..routes_properties import camera_view
from . import render, views
from .auth import Viewer, page

bp = Blueprint("console_admin", __name__)


def _property(view: Viewer, pid: str) -> records.PropertyRow:
    pid = resource_id(pid, "property")
    row = None
    if can_see_property(view.operator, pid):
        row = records.get_property(current_services().db, pid)
    if row is None:
        raise NotFound(f"no property {pid!r}", {"property": pid})
    return row


@bp.get("/properties")
@page(READ)
async def properties(view: Viewer) -> Response:
    services = current_services()
    rows = views.visible_properties(services, view.operator)
    counts = {p.id: len(records.cameras_of(services.db, p.id)) for p in rows}
    return await render(view, "console/admin/properties.html", properties=rows, cameras=counts)


def _property_data(view: Viewer, row: records.PropertyRow) -> dict[str, Any]:
    services = current_services()
    serving = [
        plugin
        for plugin in records.list_plugins(services.db)
        if row.id in records.assigned_properties(services.db, plugin.key)
    ]
    return {
        "property": row,
        # as the API shows them: their source without credentials, and their real status
        "cameras": [camera_view(c) for c in records.cameras_of(services.db, row.id)],
        "keys": records.ha_keys_of(services.db, row.id),
        "serving": serving,
    }


@bp.get("/properties/<pid>")
@page(READ)
async def property_page(view: Viewer, pid: str) -> Response:
    row = _property(view, pid)
    return await render(view, "console/admin/property.html", **_property_data(view, row))


@bp.get("/properties/<pid>/part/<name>")
@page(READ)
async def property_part(view: Viewer, pid: str, name: str) -> Response:
    templates = {
        "cameras": "console/admin/_cameras.html",
        "keys": "console/admin/_keys.html",
    }
    template = templates.get(name)
    if template is None:
        raise NotFound(f"no section {name[:40]!r} of a property page")
    row = _property(view, pid)
    return await render(view, template, **_property_data(view, row))


@bp.get("/operators")
@page(OPERATORS)
async def operators(view: Viewer) -> Response:
    return await render(view, "console/admin/operators.html", **_operators())


@bp.get("/operators/part")
@page(OPERATORS)
async def operators_part(view: Viewer) -> Response:
    return await render(view, "console/admin/_operators.html", **_operators())


def _operators() -> dict[str, Any]:
    services = current_services()
    return {
        "operators": records.list_operators(services.db),
        "roles": ROLES,
        "properties": records.list_properties(services.db),
    }


async def _trusted() -> dict[str, Any]:
    services = current_services()
    keys = await trio.to_thread.run_sync(services.installs.trusted_keys)
    return {"keys": keys}


@bp.get("/trust")
@page(TRUST)
async def trust(view: Viewer) -> Response:
    return await render(view, "console/admin/trust.html", **await _trusted())


@bp.get("/trust/part")
@page(TRUST)
async def trust_part(view: Viewer) -> Response:
    return await render(view, "console/admin/_trust.html", **await _trusted())
