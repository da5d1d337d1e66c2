"""Core calls for cameras and streams, always confined to the call's property.

    cameras.list       cameras:read   -> [camera]
    cameras.get        cameras:read   {camera}                      -> camera
    cameras.snapshot   streams:read   {camera}                      -> JPEG bytes
    cameras.frame      streams:read   {camera, after}               -> {seq, jpeg}
    streams.token      streams:read   {camera, stream, protocol, ttl_s} -> {token, expires_at, ...}
    streams.verify     streams:read   {token, camera}               -> claims (403 when refused)

Frames come from the camera hub (`cameras/hub.py`): the latest frame it holds, so a snapshot
costs no round trip to the camera and every consumer of a camera shares its one upstream
connection. `cameras.frame` is how a plugin relays a stream: it waits for the first frame
after the seq it already has (a slow relay skips frames; nothing queues), and hands the frame
over as the camera sent it (an MJPEG camera's parts are never re-encoded). A camera view shows
the camera's real status and never its source or credentials. Parameters arrive decoded and
bounded (`lanes/calls.py`). A camera of another property is `not_found`, exactly like an
unknown one; an offline camera's frame is 503 `camera_offline`.
"""

from __future__ import annotations

from typing import Any

import msgspec

from ..cameras.hub import CameraHub
from ..errors import BadRequest, Forbidden, NotFound
from ..security import ha_keys
from ..store import records
from .calls import (
    CameraFrameParams,
    CameraParams,
    NoParams,
    StreamsTokenParams,
    StreamsVerifyParams,
)
from .request import CoreFn, CoreRequest

PROTOCOLS = ["mjpeg", "jpeg"]


def camera_view(row: records.CameraRow, hub: CameraHub) -> dict[str, Any]:
    """What a plugin sees of a camera (no source, no credentials)."""
    return {
        "id": row.id,
        "name": row.name,
        "status": hub.state(row).status,
        "has_audio": row.has_audio,
        "streams": [{"id": "main", "protocols": PROTOCOLS}],
    }


def _camera(r: CoreRequest, camera_id: str) -> records.CameraRow:
    row = records.get_camera(r.db, r.property, camera_id)
    if row is None:
        raise NotFound(f"no camera {camera_id!r}", {"camera": camera_id})
    return row


class CameraCalls:
    """The camera core calls, served from one hub."""

    def __init__(self, hub: CameraHub) -> None:
        self.hub = hub

    def handlers(self) -> dict[str, CoreFn]:
        return {
            "cameras.list": self.cameras_list,
            "cameras.get": self.cameras_get,
            "cameras.snapshot": self.cameras_snapshot,
            "cameras.frame": self.cameras_frame,
            "streams.token": streams_token,
            "streams.verify": streams_verify,
        }

    async def cameras_list(self, r: CoreRequest, p: NoParams) -> list[dict[str, Any]]:
        return [camera_view(row, self.hub) for row in records.cameras_of(r.db, r.property)]

    async def cameras_get(self, r: CoreRequest, p: CameraParams) -> dict[str, Any]:
        return camera_view(_camera(r, p.camera), self.hub)

    async def cameras_snapshot(self, r: CoreRequest, p: CameraParams) -> bytes:
        """The latest frame, passed through the property's `snapshot.annotate` hooks."""
        row = _camera(r, p.camera)
        jpeg = await self.hub.snapshot(row)
        annotated = await r.hooks("snapshot.annotate", {"camera": row.id, "jpeg": jpeg})
        result = annotated.get("jpeg")
        return result if isinstance(result, bytes) and result[:2] == b"\xff\xd8" else jpeg

    async def cameras_frame(self, r: CoreRequest, p: CameraFrameParams) -> dict[str, Any]:
        """A stream's next frame as the camera sent it (no hooks: a stream is not a snapshot)."""
        row = _camera(r, p.camera)
        frame = await self.hub.next_frame(row, p.after)
        return {"seq": frame.seq, "jpeg": frame.jpeg}


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
