"""The motion watch: one task per camera whose motion detection is on, publishing
`camera.motion` on the event lane (and asking for a clip when the camera says so).

    watch = MotionWatch(db, hub, publish, on_motion=recordings.on_motion)
    await nursery.start(watch.run)

It reads the cameras table every `reconcile_s` (and at once on `poke()`): a camera whose
settings turned motion on gets a task, one whose settings or source changed gets a new one,
one turned off or removed loses it. A task is a consumer of the camera hub like any other
(`next_frame`: no connection of its own) and looks at one frame every `check_interval_s` at
most, decoding and comparing it off the trio thread (`motion.thumbnail`, `motion.step`). An
offline camera is asked again after `offline_retry_s`; a frame that is not a picture is skipped.

The event: `camera.motion` for the camera's property, data `{"camera", "score", "at"}`
(`at` in unix seconds), source `core:motion`.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable

import trio

from ..store import records
from ..store.db import Database
from .feed import CameraOffline
from .hub import CameraHub
from .motion import DetectorState, Motion, MotionSettings, motion_of, step, thumbnail
from .source import Source, source_of

log = logging.getLogger(__name__)

Publish = Callable[[str, str, dict[str, object], str], int]
OnMotion = Callable[[str, str, float], Awaitable[None]]  # property, camera, record_s
SOURCE = "core:motion"
Key = tuple[str, str]
Identity = tuple[MotionSettings, Source, str]  # a change of any restarts the watch


def _look(
    state: DetectorState, settings: MotionSettings, jpeg: bytes, now: float
) -> tuple[DetectorState, Motion | None]:
    """Decode, shrink and compare one frame (blocking: run off the trio thread)."""
    return step(state, settings, thumbnail(jpeg), now)


class MotionWatch:
    def __init__(
        self,
        db: Database,
        hub: CameraHub,
        publish: Publish,
        *,
        on_motion: OnMotion | None = None,
        check_interval_s: float = 0.5,
        reconcile_s: float = 2.0,
        offline_retry_s: float = 2.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.db = db
        self.hub = hub
        self.publish = publish
        self.on_motion = on_motion
        self.check_interval_s = check_interval_s
        self.reconcile_s = reconcile_s
        self.offline_retry_s = offline_retry_s
        self.clock = clock
        self._tasks: dict[Key, tuple[Identity, trio.CancelScope]] = {}
        self._nursery: trio.Nursery | None = None
        self._poked = trio.Event()
        self.published = 0  # events published since start (tests, metrics)

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            try:
                self.reconcile()
                task_status.started()
                while True:
                    with trio.move_on_after(self.reconcile_s):
                        await self._poked.wait()
                    self._poked = trio.Event()
                    self.reconcile()
            finally:
                self._nursery = None

    def poke(self) -> None:
        """Read the cameras' settings now (an operator changed them)."""
        self._poked.set()

    def watching(self) -> list[Key]:
        return sorted(self._tasks)

    def reconcile(self) -> None:
        if self._nursery is None:
            return
        wanted: dict[Key, tuple[Identity, MotionSettings]] = {}
        for row in records.camera_sources(self.db):
            settings = motion_of(row.source)
            if settings.enabled:
                identity: Identity = (settings, source_of(row.source), row.name)
                wanted[(row.property_id, row.id)] = (identity, settings)
        for key, (identity, scope) in list(self._tasks.items()):
            if key not in wanted or wanted[key][0] != identity:
                scope.cancel()
                del self._tasks[key]
        for key, (identity, settings) in wanted.items():
            if key not in self._tasks:
                scope = trio.CancelScope()
                self._tasks[key] = (identity, scope)
                self._nursery.start_soon(self._watch, key, settings, scope, name=f"motion {key}")

    async def _watch(self, key: Key, settings: MotionSettings, scope: trio.CancelScope) -> None:
        with scope:
            state, seq = DetectorState(), 0
            while True:
                camera = records.get_camera(self.db, *key)
                if camera is None:
                    return  # removed: the next reconcile forgets it
                try:
                    frame = await self.hub.next_frame(camera, seq)
                except CameraOffline:
                    state = DetectorState()  # compare nothing across an outage
                    await trio.sleep(self.offline_retry_s)
                    continue
                seq = frame.seq
                try:
                    state, motion = await trio.to_thread.run_sync(
                        _look, state, settings, frame.jpeg, trio.current_time()
                    )
                except ValueError as exc:
                    log.warning("camera %s/%s: frame skipped: %s", *key, exc)
                    motion = None
                if motion is not None:
                    await self._report(key, settings, motion.score)
                await trio.sleep(self.check_interval_s)

    async def _report(self, key: Key, settings: MotionSettings, score: float) -> None:
        data: dict[str, object] = {"camera": key[1], "score": score, "at": round(self.clock(), 3)}
        self.publish("camera.motion", key[0], data, SOURCE)
        self.published += 1
        if settings.record_s > 0 and self.on_motion is not None:
            await self.on_motion(key[0], key[1], settings.record_s)
