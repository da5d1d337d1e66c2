"""The camera hub: the one upstream connection per camera, its reconnects and its latest frame.

    hub = CameraHub(db, sealer, settings); await nursery.start(hub.run)
    hub.state(camera)                  online/offline, since, why (never a credential)
    await hub.snapshot(camera)         the cached frame: no round trip to the camera
    await hub.next_frame(camera, after)   the first frame after seq `after` (a CameraRow each)

The hub reads the cameras table (every `reconcile_s`, and at once on `poke()`), starts one
feed task per camera whose source is not `demo`, restarts a feed whose source or credentials
changed and stops one whose camera went away. A feed task runs its source until it fails,
marks the camera offline with the reason, waits by `Backoff` (reset once frames came) and
connects again; the first frame marks it online. Demo cameras need no connection: their frames
are rendered on demand (at most `demo_fps`), off the trio thread.

A hub that is not running (the install gates' scratch platform) serves demo cameras only;
every other camera reads as offline.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Callable

import trio

from ..store import records
from ..store.db import Database
from .credentials import Sealer
from .demo import render_frame
from .feed import CameraOffline, CameraState, Feed, Frame
from .settings import CameraSettings
from .source import Source, source_of
from .sources import SourceError
from .sources.http import run_mjpeg, run_snapshot
from .sources.video import run_video

log = logging.getLogger(__name__)

Key = tuple[str, str]


class _Demo:
    """A demo camera's frames, rendered when asked (one render at a time per camera)."""

    def __init__(self, key: Key, name: str) -> None:
        self.feed = Feed(key, Source("demo"), None, None)
        self.feed.status, self.feed.error = "online", ""
        self.name = name
        self.lock = trio.Lock()

    async def fresh(self, after: int, min_interval_s: float) -> Frame:
        """A frame newer than seq `after`: rendered now, no sooner than `min_interval_s` after
        the last one (consumers waiting together share one render)."""
        async with self.lock:
            frame = self.feed.frame
            if frame is not None:
                if frame.seq > after:
                    return frame
                wait = frame.at + min_interval_s - trio.current_time()
                if wait > 0:
                    await trio.sleep(wait)
            jpeg = await trio.to_thread.run_sync(render_frame, self.name)
            self.feed.publish(jpeg, now=trio.current_time())  # stamped with trio's clock
            assert self.feed.frame is not None
            return self.feed.frame


class CameraHub:
    def __init__(
        self,
        db: Database | None = None,
        sealer: Sealer | None = None,
        settings: CameraSettings | None = None,
        *,
        jitter: Callable[[], float] = random.random,
    ) -> None:
        self.db = db
        self.sealer = sealer
        self.settings = settings or CameraSettings()
        self._jitter = jitter
        self._feeds: dict[Key, Feed] = {}
        self._demos: dict[Key, _Demo] = {}
        self._nursery: trio.Nursery | None = None
        self._poked = trio.Event()

    # -- running -------------------------------------------------------------------------
    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            try:
                self.reconcile()
                task_status.started()
                while True:
                    with trio.move_on_after(self.settings.reconcile_s):
                        await self._poked.wait()
                    self._poked = trio.Event()
                    self.reconcile()
            finally:
                self._nursery = None
                for feed in self._feeds.values():
                    feed.close()
                self._feeds.clear()

    def poke(self) -> None:
        """Read the cameras table now (a camera was created or its source changed)."""
        self._poked.set()

    def reconcile(self) -> None:
        """One feed task per non-demo camera of the table, with its current source."""
        if self.db is None or self._nursery is None:
            return
        wanted: dict[Key, tuple[Source, str | None]] = {}
        for row in records.camera_sources(self.db):
            source = source_of(row.source)
            if source.kind != "demo":
                wanted[(row.property_id, row.id)] = (source, row.credentials)
        for key, feed in list(self._feeds.items()):
            if wanted.get(key) != (feed.source, feed.sealed):
                feed.close()
                del self._feeds[key]
        for key, (source, sealed) in wanted.items():
            if key not in self._feeds:
                credentials = self.sealer.unseal(sealed) if sealed and self.sealer else None
                feed = Feed(key, source, credentials, sealed)
                if sealed and credentials is None:
                    feed.error = "the camera's credentials cannot be read"
                self._feeds[key] = feed
                self._nursery.start_soon(self._keep, feed, name=f"camera {feed.name}")

    async def _keep(self, feed: Feed) -> None:
        """Run the feed's source, reconnecting with backoff, until the feed is closed."""
        failures = 0
        with feed.scope:
            while True:
                if feed.sealed and feed.credentials is None:
                    error = "the camera's credentials cannot be read"
                else:
                    frames_before = feed.frame.seq if feed.frame is not None else 0
                    feed.connections += 1
                    try:
                        await self._run_source(feed)
                        error = "the source ended"
                    except SourceError as exc:
                        error = str(exc)
                    except Exception:  # a bug must not end the feed: logged, retried
                        log.exception("camera %s: the source failed", feed.name)
                        error = "internal error"
                    if (feed.frame.seq if feed.frame is not None else 0) > frames_before:
                        failures = 0  # it worked for a while: start the backoff over
                failures += 1
                if feed.offline(error):
                    log.warning("camera %s offline: %s", feed.name, error)
                delay = self.settings.backoff.delay(failures, self._jitter())
                await trio.sleep(delay)

    async def _run_source(self, feed: Feed) -> None:
        def publish(jpeg: bytes) -> None:
            if feed.publish(jpeg):
                log.info("camera %s online", feed.name)

        source, creds, settings = feed.source, feed.credentials, self.settings
        if source.kind == "http" and source.url:
            await run_snapshot(source.url, creds, publish, settings)
        elif source.kind == "mjpeg" and source.url:
            await run_mjpeg(source.url, creds, publish, settings)
        elif source.kind == "rtsp" and source.url:
            await run_video(source.url, creds, publish, settings, is_file=False)
        elif source.kind == "file" and source.path:
            await run_video(source.path, None, publish, settings, is_file=True)
        else:
            raise SourceError(f"a {source.kind} source without its url or path")

    # -- what consumers ask --------------------------------------------------------------
    def _demo(self, key: Key, name: str) -> _Demo:
        demo = self._demos.get(key)
        if demo is None or demo.name != name:
            demo = self._demos[key] = _Demo(key, name)
        return demo

    def _feed(self, key: Key) -> Feed:
        feed = self._feeds.get(key)
        if feed is None:
            self.poke()  # a camera created a moment ago: connect it now
            raise CameraOffline(f"camera {key[1]!r} is offline", {"camera": key[1]})
        return feed

    def state(self, camera: records.CameraRow) -> CameraState:
        if source_of(camera.source).kind == "demo":
            return CameraState("online", 0.0)
        feed = self._feeds.get((camera.property_id, camera.id))
        if feed is None:
            return CameraState("offline", 0.0, "not connected yet")
        return feed.state()

    async def snapshot(self, camera: records.CameraRow) -> bytes:
        """The latest frame (a demo camera's rendered now); CameraOffline when there is none."""
        key = (camera.property_id, camera.id)
        if source_of(camera.source).kind == "demo":
            demo = self._demo(key, camera.name)
            latest = demo.feed.frame.seq if demo.feed.frame is not None else 0
            return (await demo.fresh(latest, 0.0)).jpeg
        return self._feed(key).latest().jpeg

    async def next_frame(
        self, camera: records.CameraRow, after: int, timeout_s: float | None = None
    ) -> Frame:
        """The first frame after seq `after` (0: the latest at once); CameraOffline when none
        comes within `timeout_s` (the settings' `wait_frame_s` by default)."""
        key = (camera.property_id, camera.id)
        timeout = self.settings.wait_frame_s if timeout_s is None else timeout_s
        if source_of(camera.source).kind == "demo":
            demo = self._demo(key, camera.name)
            with trio.move_on_after(timeout):
                return await demo.fresh(after, 1.0 / self.settings.demo_fps)
            raise CameraOffline(f"camera {camera.id!r} sent no frame", {"camera": camera.id})
        return await self._feed(key).next_after(after, timeout)

    def upstream_connections(self) -> dict[str, int]:
        """Per camera, how many times the hub has connected (tests and metrics)."""
        return {feed.name: feed.connections for feed in self._feeds.values()}
