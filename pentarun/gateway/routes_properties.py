"""Admin routes of PentaVision data: properties, their cameras and Home Assistant keys.

A property manager sees only its properties: any other is a 404, as if it did not exist.
Lists are pages by id: `limit` rows at most, `after` = the previous page's `next_after`.
Uniqueness is the store's (a duplicate id is a 409 decided by the primary key).
"""

from __future__ import annotations

from typing import Literal

import msgspec
from quart import Blueprint, Response, request

from ..errors import NotFound
from ..security import ha_keys
from ..security.operators import (
    CAMERAS,
    HA_KEYS,
    PROPERTIES,
    PROPERTY_SCOPED,
    READ,
    can_see_property,
    require,
)
from ..store import records
from .app import actor_name, current_services, json_response, operator, parse_body
from .params import (
    TOKEN_ID,
    Name,
    ResourceId,
    limit,
    query_id,
    query_match,
    resource_id,
    token_id,
)

bp = Blueprint("properties", __name__)


class PropertyRequest(msgspec.Struct, forbid_unknown_fields=True):
    id: ResourceId
    name: Name


class CameraSource(msgspec.Struct, forbid_unknown_fields=True):
    kind: Literal["demo"]  # the camera sources built so far


class CameraRequest(msgspec.Struct, forbid_unknown_fields=True):
    id: ResourceId
    name: Name
    source: CameraSource = msgspec.field(default_factory=lambda: CameraSource("demo"))
    has_audio: bool = False


class HaKeyRequest(msgspec.Struct, forbid_unknown_fields=True):
    name: Name = ""
    # this key's own request budget on the listener (None: the listener's per-key default)
    rate_limit: records.HaKeyRateLimit | None = None


def visible_property(op: records.OperatorRow, pid: str) -> records.PropertyRow:
    """The property, if it exists and this operator may see it; else 404."""
    pid = resource_id(pid, "property")
    row = records.get_property(current_services().db, pid) if can_see_property(op, pid) else None
    if row is None:
        raise NotFound(f"no property {pid!r}", {"property": pid})
    return row


@bp.post("/api/properties")
@operator(PROPERTIES)
async def create_property(op: records.OperatorRow) -> Response:
    body = await parse_body(PropertyRequest)
    services = current_services()
    row = await records.create_property(services.db, body.id, body.name)
    records.audit(services.db, actor_name(op), "property.created", property_id=body.id)
    return json_response(row, 201)


@bp.get("/api/properties")
@operator(READ)
async def list_properties(op: records.OperatorRow) -> Response:
    after, page = query_id(request.args, "after") or "", limit(request.args, 1000)
    only = sorted(op.properties) if op.role in PROPERTY_SCOPED else None
    rows = records.list_properties(current_services().db, after=after, limit=page, only=only)
    next_after = rows[-1].id if len(rows) == page else None
    return json_response({"properties": rows, "next_after": next_after})


@bp.get("/api/properties/<pid>")
@operator(READ)
async def get_property(op: records.OperatorRow, pid: str) -> Response:
    return json_response(visible_property(op, pid))


@bp.post("/api/properties/<pid>/cameras")
@operator(CAMERAS)
async def create_camera(op: records.OperatorRow, pid: str) -> Response:
    row = visible_property(op, pid)
    require(op, CAMERAS, row.id)
    body = await parse_body(CameraRequest)
    services = current_services()
    camera = await records.create_camera(
        services.db,
        row.id,
        body.id,
        name=body.name,
        source=msgspec.to_builtins(body.source),
        has_audio=body.has_audio,
    )
    records.audit(
        services.db,
        actor_name(op),
        "camera.created",
        property_id=row.id,
        detail={"camera": body.id},
    )
    return json_response(camera, 201)


@bp.get("/api/properties/<pid>/cameras")
@operator(READ)
async def list_cameras(op: records.OperatorRow, pid: str) -> Response:
    row = visible_property(op, pid)
    after, page = query_id(request.args, "after") or "", limit(request.args, 1000)
    cameras = records.cameras_of(current_services().db, row.id, after=after, limit=page)
    next_after = cameras[-1].id if len(cameras) == page else None
    return json_response({"cameras": cameras, "next_after": next_after})


@bp.post("/api/properties/<pid>/ha-keys")
@operator(HA_KEYS)
async def create_ha_key(op: records.OperatorRow, pid: str) -> Response:
    row = visible_property(op, pid)
    require(op, HA_KEYS, row.id)
    body = await parse_body(HaKeyRequest)
    services = current_services()
    created, key = await ha_keys.create_key(services.db, row.id, body.name, body.rate_limit)
    records.audit(
        services.db,
        actor_name(op),
        "ha_key.created",
        property_id=row.id,
        detail={"id": created.id, "name": created.name},
    )
    shown = {"id": created.id, "key": key, "property_id": row.id, "name": created.name}
    return json_response({**shown, "rate_limit": created.rate_limit}, 201)


@bp.get("/api/properties/<pid>/ha-keys")
@operator(READ)
async def list_ha_keys(op: records.OperatorRow, pid: str) -> Response:
    """By creation, `limit` at a time; `after` = the previous page's `next_after`."""
    row = visible_property(op, pid)
    after = query_match(request.args, "after", TOKEN_ID) or ""
    page = limit(request.args, 1000)
    keys = records.ha_keys_of(current_services().db, row.id, after=after, limit=page)
    next_after = keys[-1].id if len(keys) == page else None
    return json_response({"keys": keys, "next_after": next_after})


@bp.delete("/api/ha-keys/<key_id>")
@operator(HA_KEYS)
async def revoke_ha_key(op: records.OperatorRow, key_id: str) -> Response:
    key_id = token_id(key_id, "key")
    services = current_services()
    row = records.get_ha_key(services.db, key_id)
    if row is None or not can_see_property(op, row.property_id):
        raise NotFound(f"no key {key_id!r}")
    require(op, HA_KEYS, row.property_id)
    await records.revoke_ha_key(services.db, key_id)
    records.audit(
        services.db,
        actor_name(op),
        "ha_key.revoked",
        property_id=row.property_id,
        detail={"id": key_id},
    )
    return json_response({"id": key_id, "revoked": True})
