"""Core calls for cameras and streams, always confined to the call's property.

    cameras.list       cameras:read   -> [camera]
    cameras.get        cameras:read   {camera}                      -> camera
    cameras.snapshot   streams:read   {camera}                      -> JPEG bytes
    streams.token      streams:read   {camera, stream, protocol, ttl_s} -> {token, expires_at, ...}
    streams.verify     streams:read   {token, camera}               -> claims (403 when refused)

Parameters arrive decoded and bounded (`lanes/calls.py`). A camera of another property is
`not_found`, exactly like an unknown one.
"""

from __future__ import annotations

from typing import Any

import msgspec
import trio

from ..cameras.demo import render_frame
from ..errors import BadRequest, Forbidden, NotFound
from ..security import ha_keys
from ..store import records
from .calls import CameraParams, NoParams, StreamsTokenParams, StreamsVerifyParams
from .request import CoreFn, CoreRequest

PROTOCOLS = ["mjpeg", "jpeg"]


def camera_view(row: records.CameraRow) -> dict[str, Any]:
    return {
        "id": row.id,
        "name": row.name,
        "status": "online",
        "has_audio": row.has_audio,
        "streams": [{"id": "main", "protocols": PROTOCOLS}],
    }


def _camera(r: CoreRequest, camera_id: str) -> records.CameraRow:
    row = records.get_camera(r.db, r.property, camera_id)
    if row is None:
        raise NotFound(f"no camera {camera_id!r}", {"camera": camera_id})
    return row


async def cameras_list(r: CoreRequest, p: NoParams) -> list[dict[str, Any]]:
    return [camera_view(row) for row in records.cameras_of(r.db, r.property)]


async def cameras_get(r: CoreRequest, p: CameraParams) -> dict[str, Any]:
    return camera_view(_camera(r, p.camera))


async def cameras_snapshot(r: CoreRequest, p: CameraParams) -> bytes:
    """A frame, passed through the property's `snapshot.annotate` hooks."""
    row = _camera(r, p.camera)
    jpeg = await trio.to_thread.run_sync(render_frame, row.name)
    annotated = await r.hooks("snapshot.annotate", {"camera": row.id, "jpeg": jpeg})
    result = annotated.get("jpeg")
    return result if isinstance(result, bytes) and result[:2] == b"\xff\xd8" else jpeg


async def streams_token(r: CoreRequest, p: StreamsTokenParams) -> dict[str, Any]:
    row = _camera(r, p.camera)
    stream = p.stream or "main"
    protocol = p.protocol or "mjpeg"
    if stream != "main":
        raise NotFound(f"camera {row.id!r} has no stream {stream!r}")
    if protocol not in PROTOCOLS:
        raise BadRequest(f"protocol must be one of {PROTOCOLS}")
    # bound to the key of the listener request the plugin serves: it dies with that key
    try:
        return ha_keys.issue_stream_token(
            r.db,
            r.streams,
            p.caller,
            r.property,
            row.id,
            stream=stream,
            protocol=protocol,
            ttl_s=p.ttl_s,
        )
    except Forbidden as exc:  # no caller, a forged or expired one: audited as a refusal
        raise r.refuse(exc) from None


async def streams_verify(r: CoreRequest, p: StreamsVerifyParams) -> dict[str, Any]:
    """The token's claims, refused (403) like at the listener if its key was revoked."""
    if r.streams.check(p.token, p.camera).prop != r.property:
        raise NotFound("no such stream")  # another property's token: as if unknown
    claims, _ = ha_keys.check_stream_token(r.db, r.streams, p.token, p.camera)
    return msgspec.to_builtins(claims)  # type: ignore[no-any-return]


HANDLERS: dict[str, CoreFn] = {
    "cameras.list": cameras_list,
    "cameras.get": cameras_get,
    "cameras.snapshot": cameras_snapshot,
    "streams.token": streams_token,
    "streams.verify": streams_verify,
}
