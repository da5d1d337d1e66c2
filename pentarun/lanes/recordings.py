"""Core calls for recordings, always confined to the call's property.

    recordings.list   recordings:read   {camera?, after, limit} -> {recordings, next_after, active}
    recordings.get    recordings:read   {id, offset, length}    -> {recording, offset, size, data}
    recordings.start  recordings:write  {camera, duration_s}    -> the clip being recorded
    recordings.stop   recordings:write  {camera}                -> the finished clip

Clips are the core's (`recordings/service.py`), on disk under the data dir; a plugin reads a
clip's file in chunks of at most `calls.MAX_RECORDING_CHUNK` bytes (an IPC frame holds it).
Another property's clip or camera is `not_found`, exactly like an unknown one. A server that
keeps no recordings (the install gates' scratch platform) answers 503
`recordings_unavailable`.
"""

from __future__ import annotations

from typing import Any

from ..recordings.service import Recordings, RecordingsUnavailable
from .calls import CameraParams, RecordingsGetParams, RecordingsListParams, RecordingsStartParams
from .request import CoreFn, CoreRequest


def _unavailable() -> RecordingsUnavailable:
    return RecordingsUnavailable("this server keeps no recordings")


class RecordingCalls:
    """The recording core calls, served from one `Recordings` (None: unavailable)."""

    def __init__(self, recordings: Recordings | None) -> None:
        self.recordings = recordings

    def handlers(self) -> dict[str, CoreFn]:
        return {
            "recordings.list": self.list,
            "recordings.get": self.get,
            "recordings.start": self.start,
            "recordings.stop": self.stop,
        }

    def _service(self) -> Recordings:
        if self.recordings is None:
            raise _unavailable()
        return self.recordings

    async def list(self, r: CoreRequest, p: RecordingsListParams) -> dict[str, Any]:
        service = self._service()
        clips = service.page(r.property, camera=p.camera, after=p.after, limit=p.limit)
        return {
            "recordings": [clip.view() for clip in clips],
            "next_after": clips[-1].id if len(clips) == p.limit else None,
            "active": service.active(r.property),
        }

    async def get(self, r: CoreRequest, p: RecordingsGetParams) -> dict[str, Any]:
        meta, data, size = await self._service().read(r.property, p.id, p.offset, p.length)
        return {"recording": meta.view(), "offset": p.offset, "size": size, "data": data}

    async def start(self, r: CoreRequest, p: RecordingsStartParams) -> dict[str, Any]:
        return await self._service().start(
            r.property, p.camera, p.duration_s, "request", f"plugin:{r.plugin}"
        )

    async def stop(self, r: CoreRequest, p: CameraParams) -> dict[str, Any] | None:
        """The finished clip; None when it got no frame (it was discarded)."""
        meta = await self._service().stop(r.property, p.camera)
        return meta.view() if meta is not None else None
