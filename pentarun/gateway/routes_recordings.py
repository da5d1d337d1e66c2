"""Admin routes of recordings: list a property's clips, download one, start and stop a camera's.

    GET  /api/properties/{pid}/recordings?camera=&after=&limit=   clips in start order
    GET  /api/properties/{pid}/recordings/{id}                    the clip's file (MJPEG)
    POST /api/properties/{pid}/cameras/{cid}/recordings  {"duration_s"}   -> 201 the clip begun
    POST /api/properties/{pid}/cameras/{cid}/recordings/stop              -> the finished clip

Like every property route, a property the operator may not see is a 404, and so is a clip
of another property. Starting and stopping need `cameras.manage` for the property. A server
without recordings (`Services.recordings` None) answers 503 `recordings_unavailable`.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Annotated

import msgspec
import trio
from quart import Blueprint, Response, request

from ..errors import NotFound
from ..lanes.calls import MAX_RECORDING_S
from ..recordings.clips import CLIP_ID, CONTENT_TYPE
from ..recordings.service import Recordings, RecordingsUnavailable
from ..security.operators import CAMERAS, READ, require
from ..store import records
from .app import actor_name, current_services, json_response, operator, parse_body
from .params import limit, query_id, query_match
from .routes_properties import visible_camera, visible_property

bp = Blueprint("recordings", __name__)

CHUNK = 256 * 1024


class StartRequest(msgspec.Struct, forbid_unknown_fields=True):
    duration_s: Annotated[float, msgspec.Meta(gt=0, le=MAX_RECORDING_S)] | None = None


def _recordings() -> Recordings:
    service = current_services().recordings
    if service is None:
        raise RecordingsUnavailable("this server keeps no recordings")
    return service


@bp.get("/api/properties/<pid>/recordings")
@operator(READ)
async def list_recordings(op: records.OperatorRow, pid: str) -> Response:
    row = visible_property(op, pid)
    service = _recordings()
    camera = query_id(request.args, "camera")
    after = query_match(request.args, "after", CLIP_ID) or ""
    page = limit(request.args, 100)
    clips = service.page(row.id, camera=camera, after=after, limit=page)
    return json_response(
        {
            "recordings": [clip.view() for clip in clips],
            "next_after": clips[-1].id if len(clips) == page else None,
            "active": service.active(row.id),
        }
    )


@bp.get("/api/properties/<pid>/recordings/<rid>")
@operator(READ)
async def download_recording(op: records.OperatorRow, pid: str, rid: str) -> Response:
    row = visible_property(op, pid)
    service = _recordings()
    if not CLIP_ID.fullmatch(rid):
        raise NotFound(f"no recording {rid[:80]!r}", {"recording": rid[:80]})
    meta = service.get(row.id, rid)
    try:  # opened now: a clip retention removes later still streams to its end
        handle = await trio.open_file(service.path(meta), "rb")
    except FileNotFoundError:
        raise NotFound(f"no recording {rid!r}", {"recording": rid}) from None

    async def body() -> AsyncIterator[bytes]:
        async with handle:
            while chunk := await handle.read(CHUNK):
                yield chunk

    response = Response(
        body(),
        content_type=CONTENT_TYPE,
        headers={
            "Content-Disposition": f'attachment; filename="{meta.camera}-{meta.id}.mjpeg"',
            "Cache-Control": "no-store",
        },
    )
    response.timeout = None
    return response


@bp.post("/api/properties/<pid>/cameras/<cid>/recordings")
@operator(CAMERAS)
async def start_recording(op: records.OperatorRow, pid: str, cid: str) -> Response:
    camera = visible_camera(op, pid, cid)
    require(op, CAMERAS, camera.property_id)
    body = await parse_body(StartRequest)
    started = await _recordings().start(
        camera.property_id, camera.id, body.duration_s, "admin", actor_name(op)
    )
    records.audit(
        current_services().db,
        actor_name(op),
        "recording.started",
        property_id=camera.property_id,
        detail={"camera": camera.id, "id": started["id"], "extended": started["extended"]},
    )
    return json_response(started, 201)


@bp.post("/api/properties/<pid>/cameras/<cid>/recordings/stop")
@operator(CAMERAS)
async def stop_recording(op: records.OperatorRow, pid: str, cid: str) -> Response:
    camera = visible_camera(op, pid, cid)
    require(op, CAMERAS, camera.property_id)
    meta = await _recordings().stop(camera.property_id, camera.id)
    return json_response({"recording": meta.view() if meta is not None else None})
