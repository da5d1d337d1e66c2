"""Core calls for cameras and streams, always confined to the call's property.

    cameras.list       cameras:read   -> [camera]
    cameras.get        cameras:read   {camera}                      -> camera
    cameras.snapshot   streams:read   {camera}                      -> JPEG bytes
    streams.token      streams:read   {camera, stream, protocol, ttl_s} -> {token, expires_at, ...}
    streams.verify     streams:read   {token, camera}               -> claims (403 when refused)

A camera of another property is `not_found`, exactly like an unknown one.
"""

from __future__ import annotations

from typing import Any

import trio

from ..cameras.demo import render_frame
from ..errors import BadRequest, NotFound
from ..store import records
from .request import CoreRequest

PROTOCOLS = ["mjpeg", "jpeg"]


def camera_view(row: records.CameraRow) -> dict[str, Any]:
    return {
        "id": row.id,
        "name": row.name,
        "status": "online",
        "has_audio": row.has_audio,
        "streams": [{"id": "main", "protocols": PROTOCOLS}],
    }


def _text(r: CoreRequest, name: str) -> str:
    value = r.params.get(name)
    if not isinstance(value, str) or not value:
        raise BadRequest(f"{name} must be a non-empty string")
    return value


def _camera(r: CoreRequest) -> records.CameraRow:
    camera_id = _text(r, "camera")
    row = records.get_camera(r.db, r.property, camera_id)
    if row is None:
        raise NotFound(f"no camera {camera_id!r}", {"camera": camera_id})
    return row


async def cameras_list(r: CoreRequest) -> list[dict[str, Any]]:
    return [camera_view(row) for row in records.cameras_of(r.db, r.property)]


async def cameras_get(r: CoreRequest) -> dict[str, Any]:
    return camera_view(_camera(r))


async def cameras_snapshot(r: CoreRequest) -> bytes:
    """A frame, passed through the property's `snapshot.annotate` hooks."""
    row = _camera(r)
    jpeg = await trio.to_thread.run_sync(render_frame, row.name)
    annotated = await r.hooks("snapshot.annotate", {"camera": row.id, "jpeg": jpeg})
    result = annotated.get("jpeg")
    return result if isinstance(result, bytes) and result[:2] == b"\xff\xd8" else jpeg


async def streams_token(r: CoreRequest) -> dict[str, Any]:
    row = _camera(r)
    stream = r.params.get("stream") or "main"
    protocol = r.params.get("protocol") or "mjpeg"
    if stream != "main":
        raise NotFound(f"camera {row.id!r} has no stream {stream!r}")
    if protocol not in PROTOCOLS:
        raise BadRequest(f"protocol must be one of {PROTOCOLS}")
    ttl = r.params.get("ttl_s")
    if ttl is not None and (isinstance(ttl, bool) or not isinstance(ttl, int | float)):
        raise BadRequest("ttl_s must be a number of seconds")
    return r.streams.issue(r.property, row.id, stream, protocol, ttl_s=ttl)


async def streams_verify(r: CoreRequest) -> dict[str, Any]:
    claims = r.streams.verify(_text(r, "token"), r.params.get("camera"))
    if claims["prop"] != r.property:
        raise NotFound("no such stream")
    return claims


CALLS = {
    "cameras.list": ("cameras:read", cameras_list),
    "cameras.get": ("cameras:read", cameras_get),
    "cameras.snapshot": ("streams:read", cameras_snapshot),
    "streams.token": ("streams:read", streams_token),
    "streams.verify": ("streams:read", streams_verify),
}
