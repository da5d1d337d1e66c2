"""Recordings: clips of a camera made on request or on motion, kept per property, expired.

    recordings = Recordings(db, hub, root, config, publish); await nursery.start(recordings.run)
    await recordings.start(pid, camera, duration_s, trigger, by)   -> the active clip's view
    await recordings.stop(pid, camera)                             -> the finished clip (or None)
    recordings.page(pid, camera, after, limit) / recordings.get(pid, id)
    await recordings.read(pid, id, offset, length)                 -> (clip, bytes, size)

A clip reads its camera's frames from the camera hub like any consumer (`next_frame`: never
a connection of its own), at most `max_fps` a second, and appends them to its file off the
trio thread (`clips.ClipWriter`). It ends when its time is up (a start while it runs extends
it, so a camera records one clip at a time), on `stop`, at `max_clip_mb`, or when the server
stops; then its metadata is written, it joins the property's index and `recording.created`
is published on the event lane. A clip that got no frame (an offline camera) is discarded.

The index of finished clips is in memory, read from disk once at start (`ClipDir.load`,
which also recovers clips a crash cut short), so listing costs no disk access on the trio
thread. Retention (`retention.expired`) runs every `retention_interval_s`: it takes clips
out of the index first, then deletes their files off the trio thread.

Everything is per property: an id of another property's clip is not found, like an unknown one.
"""

from __future__ import annotations

import bisect
import logging
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import msgspec
import trio

from ..cameras.feed import CameraOffline
from ..cameras.hub import CameraHub
from ..config import RecordingsConfig
from ..errors import NotFound, PentarunError
from ..store import records
from ..store.db import Database
from .clips import ClipDir, ClipMeta, ClipWriter, Trigger, new_clip_id, read_range
from .retention import expired

log = logging.getLogger(__name__)

# the event lane's publish: (type, property, data, source) -> subscribers that took it
Publish = Callable[[str, str, dict[str, Any], str], int]
SOURCE = "core:recordings"
OFFLINE_RETRY_S = 0.5
FINISH_TIMEOUT_S = 10.0


class RecordingsUnavailable(PentarunError):
    status: ClassVar[int] = 503
    code: ClassVar[str] = "recordings_unavailable"


class TooManyRecordings(PentarunError):
    status: ClassVar[int] = 429
    code: ClassVar[str] = "too_many_recordings"


@dataclass
class _Active:
    meta: ClipMeta
    scope: trio.CancelScope
    done: trio.Event = field(default_factory=trio.Event)
    result: ClipMeta | None = None

    def view(self, until_unix: float, extended: bool = False) -> dict[str, Any]:
        return {
            "id": self.meta.id,
            "camera": self.meta.camera,
            "started_at": self.meta.started_at,
            "until": until_unix,
            "trigger": self.meta.trigger,
            "extended": extended,
        }


class Recordings:
    def __init__(
        self,
        db: Database,
        hub: CameraHub,
        root: Path,
        config: RecordingsConfig,
        publish: Publish,
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.db = db
        self.hub = hub
        self.clips = ClipDir(root)
        self.config = config
        self.publish = publish
        self.clock = clock
        self._index: dict[str, dict[str, ClipMeta]] = {}
        self._ids: dict[str, list[str]] = {}  # per property, sorted (ids sort by start)
        self._active: dict[tuple[str, str], _Active] = {}
        self._nursery: trio.Nursery | None = None

    # -- running -------------------------------------------------------------------------
    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        for meta in await trio.to_thread.run_sync(self.clips.load):
            self._add(meta)
        await self.enforce_retention()  # what expired while the server was down
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            try:
                task_status.started()
                while True:
                    await trio.sleep(self.config.retention_interval_s)
                    await self.enforce_retention()
            finally:
                self._nursery = None

    def _add(self, meta: ClipMeta) -> None:
        clips = self._index.setdefault(meta.property_id, {})
        if meta.id not in clips:
            bisect.insort(self._ids.setdefault(meta.property_id, []), meta.id)
        clips[meta.id] = meta

    def _drop(self, property_id: str, clip_id: str) -> None:
        if self._index.get(property_id, {}).pop(clip_id, None) is not None:
            ids = self._ids[property_id]
            del ids[bisect.bisect_left(ids, clip_id)]

    # -- reading ---------------------------------------------------------------------------
    def page(
        self, property_id: str, *, camera: str | None = None, after: str = "", limit: int = 100
    ) -> list[ClipMeta]:
        """Finished clips of the property in id (start) order after `after`, `limit` at most."""
        ids, clips = self._ids.get(property_id, []), self._index.get(property_id, {})
        out: list[ClipMeta] = []
        for clip_id in ids[bisect.bisect_right(ids, after) :]:
            meta = clips[clip_id]
            if camera is None or meta.camera == camera:
                out.append(meta)
                if len(out) >= limit:
                    break
        return out

    def get(self, property_id: str, clip_id: str) -> ClipMeta:
        meta = self._index.get(property_id, {}).get(clip_id)
        if meta is None:
            raise NotFound(f"no recording {clip_id[:64]!r}", {"recording": clip_id[:64]})
        return meta

    def path(self, meta: ClipMeta) -> Path:
        return self.clips.data_path(meta.property_id, meta.id)

    async def read(
        self, property_id: str, clip_id: str, offset: int, length: int
    ) -> tuple[ClipMeta, bytes, int]:
        """Up to `length` bytes of the clip's file from `offset`, and its size."""
        meta = self.get(property_id, clip_id)
        if length == 0:
            return meta, b"", meta.bytes
        try:
            data, size = await trio.to_thread.run_sync(read_range, self.path(meta), offset, length)
        except FileNotFoundError:  # retention took it a moment ago
            raise NotFound(f"no recording {clip_id!r}", {"recording": clip_id}) from None
        return meta, data, size

    def active(self, property_id: str) -> list[dict[str, Any]]:
        """The clips being recorded for the property."""
        return [
            a.view(self._unix(a.scope.deadline))
            for (pid, _), a in sorted(self._active.items())
            if pid == property_id
        ]

    # -- recording -------------------------------------------------------------------------
    def _unix(self, trio_deadline: float) -> float:
        return round(self.clock() + (trio_deadline - trio.current_time()), 3)

    async def start(
        self,
        property_id: str,
        camera_id: str,
        duration_s: float | None,
        trigger: Trigger,
        by: str,
    ) -> dict[str, Any]:
        """Record the camera for `duration_s` (the default when None, at most the maximum);
        a camera already recording has its clip extended instead."""
        row = records.get_camera(self.db, property_id, camera_id)
        if row is None:
            raise NotFound(f"no camera {camera_id!r}", {"camera": camera_id})
        if self._nursery is None:
            raise RecordingsUnavailable("recordings are not running on this server")
        duration = min(duration_s or self.config.default_duration_s, self.config.max_duration_s)
        deadline = trio.current_time() + duration
        key = (property_id, camera_id)
        active = self._active.get(key)
        if active is not None and active.scope.cancel_called:  # stopping: wait, then anew
            await active.done.wait()
            active = self._active.get(key)
        if active is not None:
            active.scope.deadline = max(active.scope.deadline, deadline)
            return active.view(self._unix(active.scope.deadline), extended=True)
        if len(self._active) >= self.config.max_active:
            raise TooManyRecordings(
                f"{len(self._active)} clips are being recorded, the most at once",
                {"limit": self.config.max_active},
            )
        started = self.clock()
        clip_id = new_clip_id(started, secrets.token_hex(4))
        meta = ClipMeta(
            id=clip_id,
            property_id=property_id,
            camera=camera_id,
            started_at=started,
            ended_at=started,
            frames=0,
            bytes=0,
            trigger=trigger,
            by=by,
            finished=False,
        )
        active = self._active[key] = _Active(meta, trio.CancelScope(deadline=deadline))
        self._nursery.start_soon(self._record, active, row, name=f"recording {clip_id}")
        return active.view(self._unix(deadline))

    async def stop(self, property_id: str, camera_id: str) -> ClipMeta | None:
        """End the camera's clip now; the finished clip (None: it got no frame)."""
        active = self._active.get((property_id, camera_id))
        if active is None:
            raise NotFound(f"camera {camera_id!r} is not recording", {"camera": camera_id})
        active.scope.cancel()
        await active.done.wait()
        return active.result

    async def on_motion(self, property_id: str, camera_id: str, record_s: float) -> None:
        """A camera set to record on motion saw motion (cameras/motion_watch.py)."""
        try:
            await self.start(property_id, camera_id, record_s, "motion", "core:motion")
        except PentarunError as exc:
            log.warning("camera %s/%s: no recording on motion: %s", property_id, camera_id, exc)

    async def _record(self, active: _Active, row: records.CameraRow) -> None:
        meta = active.meta
        writer: ClipWriter | None = None
        try:
            await trio.to_thread.run_sync(self.clips.write_meta, meta)
            path = self.clips.data_path(meta.property_id, meta.id)
            writer = await trio.to_thread.run_sync(ClipWriter, path)
            with active.scope:
                await self._frames(active, row, writer)
        except Exception:  # a disk or camera failure ends this clip, never the others
            log.exception("recording %s/%s failed", meta.property_id, meta.id)
        finally:
            # whatever ended it (its time, its size cap, a failure): a start from now on waits
            # for this clip to finish and records a new one, never "extends" a finished one
            active.scope.cancel()
            with trio.CancelScope(shield=True), trio.move_on_after(FINISH_TIMEOUT_S):
                await self._finish(active, writer)

    async def _frames(self, active: _Active, row: records.CameraRow, writer: ClipWriter) -> None:
        seq, interval = 0, 1.0 / self.config.max_fps
        max_bytes = self.config.max_clip_mb * 1024 * 1024
        while writer.bytes < max_bytes:
            try:
                frame = await self.hub.next_frame(row, seq)
            except CameraOffline:
                await trio.sleep(OFFLINE_RETRY_S)
                continue
            seq = frame.seq
            written = trio.current_time()
            await trio.to_thread.run_sync(writer.write, frame.jpeg, self.clock())
            await trio.sleep_until(written + interval)

    async def _finish(self, active: _Active, writer: ClipWriter | None) -> None:
        key = (active.meta.property_id, active.meta.camera)
        meta = active.meta
        try:
            if writer is not None:
                await trio.to_thread.run_sync(writer.close)
            if writer is None or writer.frames == 0:
                await trio.to_thread.run_sync(self.clips.remove, meta.property_id, meta.id)
                log.info("recording %s/%s: no frame, discarded", meta.property_id, meta.id)
                return
            done = msgspec.structs.replace(
                meta,
                ended_at=self.clock(),
                frames=writer.frames,
                bytes=writer.bytes,
                finished=True,
            )
            await trio.to_thread.run_sync(self.clips.write_meta, done)
            self._add(done)
            active.result = done
            self.publish("recording.created", meta.property_id, done.view(), SOURCE)
        except OSError as exc:
            log.error("recording %s/%s not finished: %s", meta.property_id, meta.id, exc)
        finally:
            if self._active.get(key) is active:
                del self._active[key]
            active.done.set()

    # -- retention -------------------------------------------------------------------------
    async def enforce_retention(self) -> int:
        """Remove what retention says of every property; how many clips went."""
        now, removed = self.clock(), 0
        max_age_s = self.config.max_age_h * 3600
        max_bytes = self.config.max_mb * 1024 * 1024
        for property_id, clips in list(self._index.items()):
            for clip_id in expired(clips.values(), now, max_age_s, max_bytes):
                self._drop(property_id, clip_id)
                try:
                    await trio.to_thread.run_sync(self.clips.remove, property_id, clip_id)
                except OSError as exc:  # one clip that cannot go never stops the server
                    log.warning("retention could not remove %s/%s: %s", property_id, clip_id, exc)
                    continue
                removed += 1
        if removed:
            log.info("retention removed %d recordings", removed)
        return removed
