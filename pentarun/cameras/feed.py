"""One camera's live state in the core: its status and its latest frame, shared by every
consumer. No trio task of its own (the hub runs the source that feeds it).

Fan-out is by the latest frame and a sequence number: a consumer asks for the first frame
after the one it has (`next_after`), so a slow consumer skips frames instead of queueing them,
and a camera holds one frame in memory whatever the number of consumers.
"""

from __future__ import annotations

import time
from typing import ClassVar, Literal

import msgspec
import trio

from ..errors import PentarunError
from .source import Credentials, Source

Status = Literal["online", "offline"]


class CameraOffline(PentarunError):
    status: ClassVar[int] = 503
    code: ClassVar[str] = "camera_offline"


class Frame(msgspec.Struct, frozen=True):
    seq: int  # 1, 2, ... per feed; a consumer asks for a frame after the seq it has
    jpeg: bytes
    at: float


class CameraState(msgspec.Struct, frozen=True):
    """What a camera view shows of its feed: status, since when, and why it is offline."""

    status: Status
    since: float
    error: str = ""
    frames: int = 0
    connections: int = 0  # attempts to reach the camera since the server started


class Feed:
    def __init__(
        self,
        key: tuple[str, str],
        source: Source,
        credentials: Credentials | None,
        sealed: str | None,
    ) -> None:
        self.key = key
        self.source = source
        self.credentials = credentials
        self.sealed = sealed  # what the row held: a change of it restarts the feed
        self.status: Status = "offline"
        self.since = time.time()
        self.error = "connecting"
        self.frame: Frame | None = None
        self.connections = 0
        self.closed = False
        self.scope = trio.CancelScope()
        self._changed = trio.Event()

    @property
    def name(self) -> str:
        return f"{self.key[0]}/{self.key[1]}"

    def state(self) -> CameraState:
        frames = self.frame.seq if self.frame is not None else 0
        return CameraState(self.status, self.since, self.error, frames, self.connections)

    def publish(self, jpeg: bytes, now: float | None = None) -> bool:
        """A new frame; True when it brought the camera back online."""
        now = time.time() if now is None else now
        seq = self.frame.seq + 1 if self.frame is not None else 1
        self.frame = Frame(seq, jpeg, now)
        came_online = self.status != "online"
        if came_online:
            self.status, self.since, self.error = "online", now, ""
        self._wake()
        return came_online

    def offline(self, error: str, now: float | None = None) -> bool:
        """The source failed; True when the camera was online until now."""
        was_online = self.status == "online"
        if was_online:
            self.since = time.time() if now is None else now
        self.status, self.error = "offline", error
        self._wake()
        return was_online

    def close(self) -> None:
        self.closed = True
        self.scope.cancel()
        self._wake()

    def _wake(self) -> None:
        self._changed.set()
        self._changed = trio.Event()

    def latest(self) -> Frame:
        if self.status != "online" or self.frame is None:
            # no reason in the details: they reach plugins, and a source's error names its
            # address or path (the admin view shows it as `status_reason`)
            raise CameraOffline(f"camera {self.key[1]!r} is offline", {"camera": self.key[1]})
        return self.frame

    async def next_after(self, after: int, timeout_s: float) -> Frame:
        """The first frame newer than `after` (the latest one at once when it is newer, or
        when `after` is ahead of this feed: a number of the feed this one replaced);
        CameraOffline when none comes within `timeout_s`."""
        with trio.move_on_after(timeout_s):
            while not self.closed:
                frame = self.frame
                if frame is not None and frame.seq != after and self.status == "online":
                    return frame
                await self._changed.wait()
        raise CameraOffline(
            f"camera {self.key[1]!r} sent no frame within {timeout_s:g} s", {"camera": self.key[1]}
        )
