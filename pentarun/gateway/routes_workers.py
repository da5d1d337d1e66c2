"""Admin routes of a running plugin: call a handler, its configuration, what it did (lifecycle
events, health checks, log lines). Lists are pages, newest first: `limit` rows at most, and
`before` = the previous page's `next_before` for older ones."""

from __future__ import annotations

from typing import Annotated, Any

import msgspec
import trio
from quart import Blueprint, Response, request

from .. import plugin_config
from ..packages.manifest import Manifest
from ..security.operators import CALL, MANAGE_PLUGINS, READ, require
from ..store import records
from .app import actor_name, body_limit, current_services, json_response, operator, parse_body
from .bodies import decode_json
from .http import read_body, reply_response
from .params import MAX_HANDLER, ResourceId, limit, plugin_key, query_float, query_int

bp = Blueprint("workers", __name__)


class CallRequest(msgspec.Struct, forbid_unknown_fields=True):
    handler: Annotated[str, msgspec.Meta(min_length=1, max_length=MAX_HANDLER)]
    property: ResourceId
    params: dict[str, Any] = {}


def _config_schema(manifest: Manifest | None) -> dict[str, Any]:
    return manifest.config_schema if manifest is not None else plugin_config.DEFAULT_SCHEMA


@bp.post("/api/plugins/<key>/call")
@operator(CALL)
async def call_plugin(op: records.OperatorRow, key: str) -> Response:
    body = await parse_body(CallRequest)
    require(op, CALL, body.property)
    key = plugin_key(key)
    services = current_services()
    plugin = services.registry.plugin(key)
    actor = services.supervisor.directory.require(key, plugin.state)
    records.audit(
        services.db,
        actor_name(op),
        "plugin.call",
        plugin=key,
        property_id=body.property,
        detail={"handler": body.handler},
    )
    # whether it may run twice is the actor's to decide, from the manifest's `idempotent` list
    reply = await actor.call(body.handler, body.property, body.params)
    return reply_response(reply, wrap_json=True)


@bp.get("/api/plugins/<key>/config")
@operator(READ)
async def get_config(op: records.OperatorRow, key: str) -> Response:
    key = plugin_key(key)
    services = current_services()
    row = services.registry.plugin(key)
    return json_response(
        {"config": records.get_config(services.db, key), "schema": _config_schema(row.manifest)}
    )


@bp.put("/api/plugins/<key>/config")
@body_limit("config")
@operator(MANAGE_PLUGINS)
async def put_config(op: records.OperatorRow, key: str) -> Response:
    """Checked whole (syntax, depth, size, schema) before it is stored or pushed. The schema
    check runs off the trio thread (see plugin_config); the audit row holds the change's
    digest, size and changed top-level keys, never a value."""
    key = plugin_key(key)
    services = current_services()
    row = services.registry.plugin(key)
    raw = await read_body()
    value = decode_json(raw or b"null", what="configuration")
    server = services.config
    budget = plugin_config.budget(
        server.server.max_config_body_bytes, server.supervisor.max_frame_bytes
    )
    previous = records.get_config(services.db, key)
    config, change = await trio.to_thread.run_sync(
        plugin_config.check_change, previous, value, _config_schema(row.manifest), budget
    )
    await records.set_config(services.db, key, config)
    actor = services.supervisor.directory.get(key)
    if actor is not None:
        actor.push_config(config)
    records.audit(services.db, actor_name(op), "plugin.config_changed", plugin=key, detail=change)
    return json_response({"config": config})


@bp.get("/api/plugins/<key>/events")
@operator(READ)
async def plugin_events(op: records.OperatorRow, key: str) -> Response:
    key = plugin_key(key)
    page = limit(request.args, 100)
    before = query_int(request.args, "before", None, 1, 2**63 - 1)
    services = current_services()
    services.registry.plugin(key)
    events = records.list_events(services.db, key, page, before)
    next_before = events[-1].id if len(events) == page else None
    return json_response({"events": events, "next_before": next_before})


@bp.get("/api/plugins/<key>/health")
@operator(READ)
async def plugin_health(op: records.OperatorRow, key: str) -> Response:
    key = plugin_key(key)
    page, before = limit(request.args, 100), query_float(request.args, "before")
    services = current_services()
    services.registry.plugin(key)
    checks = records.list_health(services.db, key, page, before)
    next_before = checks[-1].checked_at if len(checks) == page else None
    return json_response({"checks": checks, "next_before": next_before})


@bp.get("/api/plugins/<key>/logs")
@operator(READ)
async def plugin_logs(op: records.OperatorRow, key: str) -> Response:
    """The newest `limit` of the log lines the supervisor keeps (supervisor.log_lines_kept)."""
    key = plugin_key(key)
    page = limit(request.args, 1000)
    services = current_services()
    services.registry.plugin(key)
    actor = services.supervisor.directory.get(key)
    lines = list(actor.logs)[-page:] if actor else []
    return json_response({"lines": lines})
