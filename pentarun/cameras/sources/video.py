"""PyAV sources: `rtsp` (H.264/H.265 over RTSP) and `file` (a video file, looped at its own
pace). Decoding and JPEG encoding run in a worker thread, never on the trio thread.

    await run_video(target, credentials, publish, settings, loop=...)

The thread decodes every frame (inter-frames need their predecessors) but encodes at most
`max_fps` a second; each JPEG goes to `publish` on the trio thread. Cancelling the caller sets
a stop flag the thread checks between frames; a blocked read ends within PyAV's read timeout.
Errors are re-raised as SourceError from the error's class and reason only: PyAV puts the URL
(with any credentials in it) into its messages, so they are never shown.
"""

from __future__ import annotations

import io
import threading
import time
from typing import Any
from urllib.parse import quote, urlsplit, urlunsplit

import av
import trio

from ..settings import CameraSettings
from ..source import Credentials, redact
from . import Publish, SourceError


def with_credentials(url: str, credentials: Credentials | None) -> str:
    """The URL FFmpeg opens: user info percent-encoded into it (never shown or logged)."""
    if credentials is None:
        return url
    parts = urlsplit(url)
    user = quote(credentials.username, safe="")
    secret = quote(credentials.password, safe="")
    netloc = f"{user}:{secret}@{parts.netloc}" if credentials.password else f"{user}@{parts.netloc}"
    return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))


def _safe_reason(exc: BaseException) -> str:
    reason = getattr(exc, "strerror", None)
    return f"{type(exc).__name__}: {reason}" if isinstance(reason, str) else type(exc).__name__


class _Decoder:
    """The thread's side: open, decode, pace (files), encode, hand over; until stopped."""

    def __init__(
        self,
        *,
        target: str,
        shown: str,
        is_file: bool,
        publish: Publish,
        settings: CameraSettings,
        token: trio.lowlevel.TrioToken,
    ) -> None:
        self.target, self.shown, self.is_file = target, shown, is_file
        self.publish, self.settings, self.token = publish, settings, token
        self.stop = threading.Event()
        self.last_sent = 0.0  # across a file's loops: a one-frame file is paced too

    def run(self) -> None:
        options: dict[str, str] = {}
        if not self.is_file:
            options = {"rtsp_transport": "tcp", "stimeout": "10000000", "timeout": "10000000"}
        timeout = (self.settings.connect_timeout_s, self.settings.read_timeout_s)
        try:
            container: Any = av.open(self.target, options=options, timeout=timeout)
        except Exception as exc:
            raise SourceError(f"{self.shown}: cannot open ({_safe_reason(exc)})") from None
        try:
            if not container.streams.video:
                raise SourceError(f"{self.shown}: no video stream")
            stream = container.streams.video[0]
            stream.thread_type = "AUTO"
            while not self.stop.is_set():
                self._play(container, stream)
                if not self.is_file:
                    raise SourceError(f"{self.shown}: the stream ended")
                container.seek(0)  # a file loops
        except SourceError:
            raise
        except Exception as exc:
            raise SourceError(f"{self.shown}: decoding failed ({_safe_reason(exc)})") from None
        finally:
            container.close()

    def _play(self, container: Any, stream: Any) -> None:
        interval = 1.0 / self.settings.max_fps
        started = time.monotonic()
        first_pts: float | None = None
        frames = 0
        for frame in container.decode(stream):
            if self.stop.is_set():
                return
            frames += 1
            now = time.monotonic()
            if self.is_file and frame.time is not None:  # a file plays at its own pace
                first_pts = frame.time if first_pts is None else first_pts
                ahead = (frame.time - first_pts) - (now - started)
                if ahead > 0 and self.stop.wait(min(ahead, 1.0)):
                    return
                now = time.monotonic()
            if now - self.last_sent < interval:
                if frames == 1 and self.stop.wait(interval - (now - self.last_sent)):
                    return  # a loop's first frame waits its turn (a still image would spin)
                if frames != 1:
                    continue
                now = time.monotonic()
            self.last_sent = now
            out = io.BytesIO()
            frame.to_image().save(out, format="JPEG", quality=self.settings.jpeg_quality)
            jpeg = out.getvalue()
            if len(jpeg) > self.settings.max_frame_bytes:
                raise SourceError(f"{self.shown}: a frame larger than the limit")
            try:
                trio.from_thread.run_sync(self.publish, jpeg, trio_token=self.token)
            except (trio.RunFinishedError, trio.Cancelled):
                self.stop.set()
                return
        if frames == 0:
            raise SourceError(f"{self.shown}: no frame could be decoded")


async def run_video(
    target: str,
    credentials: Credentials | None,
    publish: Publish,
    settings: CameraSettings,
    *,
    is_file: bool,
) -> None:
    """Decode `target` (an rtsp URL or a file path) in a thread until it fails or is cancelled."""
    shown = target if is_file else redact(target)
    opened = target if is_file else with_credentials(target, credentials)
    decoder = _Decoder(
        target=opened,
        shown=shown,
        is_file=is_file,
        publish=publish,
        settings=settings,
        token=trio.lowlevel.current_trio_token(),
    )
    try:
        # abandoned on cancel: the thread sees the stop flag within a frame or a read timeout.
        # Its own limiter: a decoder holds its thread for as long as the camera exists, and
        # must never take one of the slots every other thread call of the server shares.
        await trio.to_thread.run_sync(
            decoder.run, abandon_on_cancel=True, limiter=trio.CapacityLimiter(1)
        )
    finally:
        decoder.stop.set()
