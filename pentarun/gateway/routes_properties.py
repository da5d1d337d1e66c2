"""Admin routes of PentaVision data: properties, their cameras (source, motion settings) and
Home Assistant keys.

A property manager sees only its properties: any other is a 404, as if it did not exist.
Lists are pages by id: `limit` rows at most, `after` = the previous page's `next_after`.
Uniqueness is the store's (a duplicate id is a 409 decided by the primary key).
"""

from __future__ import annotations

import os
from typing import Any

import msgspec
import trio
from quart import Blueprint, Response, request

from ..cameras.motion import MotionSettings, motion_of
from ..cameras.source import (
    FILES_DIR,
    Source,
    SourceBody,
    SourceProblem,
    placement_problem,
    source_of,
    split_source,
)
from ..errors import BadRequest, NotFound, PentarunError
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


class CameraRequest(msgspec.Struct, forbid_unknown_fields=True):
    id: ResourceId
    name: Name
    source: SourceBody = msgspec.field(default_factory=SourceBody)
    has_audio: bool = False
    motion: MotionSettings | None = None  # motion detection (cameras/motion.py): off if absent


class CameraSourceRequest(msgspec.Struct, forbid_unknown_fields=True):
    source: SourceBody


async def _check_placement(op: records.OperatorRow, source: dict[str, Any]) -> None:
    """400 when the source points where this operator may not (cameras/source.py)."""
    services = current_services()
    files_dir = str(services.data_dir / FILES_DIR)
    path = source.get("path")
    real_files, real_path = await trio.to_thread.run_sync(
        lambda: (os.path.realpath(files_dir), os.path.realpath(path) if path else None)
    )
    problem = placement_problem(
        msgspec.convert(source, Source),
        trusted=op.role in ("root", "admin"),
        files_dir=real_files,
        real_path=real_path,
    )
    if problem is not None:
        raise BadRequest(f"invalid camera source: {problem}", {"field": f"source.{problem.field}"})


def _split(body: SourceBody) -> tuple[dict[str, Any], str | None]:
    """The source to store and its sealed credentials; 400 naming the broken rule (never
    repeating a credential)."""
    try:
        source, credentials = split_source(body)
    except SourceProblem as exc:
        raise BadRequest(
            f"invalid camera source: {exc}", {"field": f"source.{exc.field}"}
        ) from None
    sealed = None
    if credentials is not None:
        sealer = current_services().cameras.sealer
        if sealer is None:
            raise PentarunError("this server cannot store camera credentials (no key)")
        sealed = sealer.seal(credentials)
    return msgspec.to_builtins(source), sealed


def camera_view(row: records.CameraRow, has_credentials: bool | None = None) -> dict[str, Any]:
    """What the admin API shows of a camera: its source (never credentials) and real status."""
    state = current_services().cameras.state(row)
    view: dict[str, Any] = {
        "property_id": row.property_id,
        "id": row.id,
        "name": row.name,
        "source": msgspec.to_builtins(source_of(row.source)),
        "has_audio": row.has_audio,
        "created_at": row.created_at,
        "status": state.status,
        "status_since": state.since or None,
        "status_reason": state.error,
        "motion": motion_of(row.source),
    }
    if has_credentials is not None:
        view["has_credentials"] = has_credentials
    return view


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
    source, sealed = _split(body.source)
    await _check_placement(op, source)
    if body.motion is not None:
        source["motion"] = msgspec.to_builtins(body.motion)
    services = current_services()
    camera = await records.create_camera(
        services.db,
        row.id,
        body.id,
        name=body.name,
        source=source,
        has_audio=body.has_audio,
        credentials=sealed,
    )
    services.cameras.poke()  # connect it now
    records.audit(
        services.db,
        actor_name(op),
        "camera.created",
        property_id=row.id,
        detail={"camera": body.id, "kind": source["kind"]},
    )
    return json_response(camera_view(camera, sealed is not None), 201)


@bp.get("/api/properties/<pid>/cameras")
@operator(READ)
async def list_cameras(op: records.OperatorRow, pid: str) -> Response:
    row = visible_property(op, pid)
    after, page = query_id(request.args, "after") or "", limit(request.args, 1000)
    cameras = records.cameras_of(current_services().db, row.id, after=after, limit=page)
    next_after = cameras[-1].id if len(cameras) == page else None
    views = [camera_view(camera) for camera in cameras]
    return json_response({"cameras": views, "next_after": next_after})


def visible_camera(op: records.OperatorRow, pid: str, cid: str) -> records.CameraRow:
    """The camera of a property this operator may see; else 404."""
    row = visible_property(op, pid)
    cid = resource_id(cid, "camera")
    camera = records.get_camera(current_services().db, row.id, cid)
    if camera is None:
        raise NotFound(f"no camera {cid!r}", {"camera": cid})
    return camera


@bp.get("/api/properties/<pid>/cameras/<cid>")
@operator(READ)
async def get_camera(op: records.OperatorRow, pid: str, cid: str) -> Response:
    return json_response(camera_view(visible_camera(op, pid, cid)))


@bp.put("/api/properties/<pid>/cameras/<cid>/source")
@operator(CAMERAS)
async def set_camera_source(op: records.OperatorRow, pid: str, cid: str) -> Response:
    """Replace a camera's source (and its credentials: none unless given again)."""
    camera = visible_camera(op, pid, cid)
    require(op, CAMERAS, camera.property_id)
    body = await parse_body(CameraSourceRequest)
    source, sealed = _split(body.source)
    await _check_placement(op, source)
    services = current_services()
    await records.set_camera_source(services.db, camera.property_id, camera.id, source, sealed)
    services.cameras.poke()
    records.audit(
        services.db,
        actor_name(op),
        "camera.source_changed",
        property_id=camera.property_id,
        detail={"camera": camera.id, "kind": source["kind"]},
    )
    changed = records.get_camera(services.db, camera.property_id, camera.id)
    assert changed is not None
    return json_response(camera_view(changed, sealed is not None))


@bp.put("/api/properties/<pid>/cameras/<cid>/motion")
@operator(CAMERAS)
async def set_camera_motion(op: records.OperatorRow, pid: str, cid: str) -> Response:
    """Replace a camera's motion settings (an absent field takes its default, so `{}` turns
    detection off); the motion watch picks them up within seconds."""
    camera = visible_camera(op, pid, cid)
    require(op, CAMERAS, camera.property_id)
    body = await parse_body(MotionSettings)
    services = current_services()
    await records.set_camera_motion(
        services.db, camera.property_id, camera.id, msgspec.to_builtins(body)
    )
    records.audit(
        services.db,
        actor_name(op),
        "camera.motion_changed",
        property_id=camera.property_id,
        detail={"camera": camera.id, **msgspec.to_builtins(body)},
    )
    changed = records.get_camera(services.db, camera.property_id, camera.id)
    assert changed is not None
    return json_response(camera_view(changed))


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
