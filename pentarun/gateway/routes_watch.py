"""Admin routes operators watch with: liveness and readiness, metrics, the bench, the live
feed, the audit log; and publishing a platform event onto the event lane."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import msgspec
import trio
from quart import Blueprint, Response, request

from ..errors import Forbidden
from ..security.operators import AUDIT, EVENTS, PROPERTY_SCOPED, READ, require
from ..store import records
from . import observe
from .app import actor_name, current_services, json_response, operator, parse_body
from .params import (
    AUDIT_TYPE,
    EventType,
    ResourceId,
    limit,
    query_float,
    query_id,
    query_int,
    query_match,
    query_plugin,
)
from .routes_properties import visible_property

bp = Blueprint("watch", __name__)

FEED_KEEPALIVE_S = 15.0
AUDIT_PAGE = 500


class EventRequest(msgspec.Struct, forbid_unknown_fields=True):
    type: EventType
    property: ResourceId
    data: dict[str, Any] = {}


@bp.get("/healthz")
async def healthz() -> Response:
    return json_response({"status": "ok"})


@bp.get("/readyz")
async def readyz() -> Response:
    """{"ready": bool, "checks": {name: {"ok": bool, ...}}}; 503 until ready."""
    ready, checks = observe.readiness(current_services())
    return json_response({"ready": ready, "checks": checks}, 200 if ready else 503)


@bp.get("/metrics")
async def prometheus() -> Response:
    text = observe.metrics(current_services())
    return Response(text, content_type="text/plain; version=0.0.4")


@bp.get("/api/bench")
@operator(READ)
async def bench(op: records.OperatorRow) -> Response:
    services = current_services()
    return json_response({"plugins": observe.bench(services), "thresholds": services.config.bench})


@bp.get("/api/feed")
@operator(READ)
async def feed(op: records.OperatorRow) -> Response:
    services = current_services()

    async def events() -> AsyncIterator[bytes]:
        yield b": connected\n\n"
        async with services.feed.subscribe() as subscription:
            while True:
                with trio.move_on_after(FEED_KEEPALIVE_S) as idle:
                    event = await subscription.receive()
                if idle.cancelled_caught:
                    yield b": keep-alive\n\n"
                    continue
                prop = event.get("property") or ""
                if op.role in PROPERTY_SCOPED and prop not in op.properties:
                    continue
                yield (
                    f"event: {event['type']}\ndata: ".encode()
                    + msgspec.json.encode(event)
                    + b"\n\n"
                )

    response = Response(
        events(), content_type="text/event-stream", headers={"Cache-Control": "no-store"}
    )
    response.timeout = None
    return response


@bp.get("/api/audit")
@operator(AUDIT)
async def audit_log(op: records.OperatorRow) -> Response:
    """Newest first. Filters: plugin, property, type, since (UNIX time); `limit` rows at most
    (default 500, at most 1000). A page looks at a bounded window of the log, so it may hold
    fewer rows than asked: `before` = the previous page's `next_before` goes on (null: done)."""
    args = request.args
    property_id = query_id(args, "property")
    plugin = query_plugin(args)
    type_ = query_match(args, "type", AUDIT_TYPE)
    since = query_float(args, "since")
    before = query_int(args, "before", None, 1, 2**63 - 1)
    page = limit(args, AUDIT_PAGE)
    if op.role in PROPERTY_SCOPED and property_id is None:
        raise Forbidden("a property manager reads the audit log of one of its properties")
    require(op, AUDIT, property_id)
    found = records.audit_page(
        current_services().db,
        plugin=plugin,
        property_id=property_id,
        type_=type_,
        since=since,
        before=before,
        limit=page,
    )
    return json_response({"events": found.rows, "next_before": found.next_before})


@bp.post("/api/events")
@operator(EVENTS)
async def publish_event(op: records.OperatorRow) -> Response:
    body = await parse_body(EventRequest)
    require(op, EVENTS, body.property)
    visible_property(op, body.property)
    services = current_services()
    delivered = services.events.publish(body.type, body.property, body.data, source=actor_name(op))
    records.audit(
        services.db,
        actor_name(op),
        "event.published",
        property_id=body.property,
        detail={"type": body.type, "delivered": delivered},
    )
    return json_response(
        {"type": body.type, "property": body.property, "delivered": delivered}, 202
    )
