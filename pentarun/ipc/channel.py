"""A framed message channel over a trio stream: one writer task, one reader task.

`send()` never blocks. On a socket stream whose writer is idle it writes the frame at once with
a non-blocking write (saving a scheduler round on the latency path); otherwise, or for what
the kernel did not take, it queues the bytes and wakes the writer, which sends everything
queued so far in one `send_all` (coalescing frames under load; two tasks never send at once).
`run()` owns both tasks; it returns when the peer closes the stream or a write fails (a
channel that cannot write is over: reading stops too), and raises `ProtocolError` for a
malformed or oversized frame. `send()` raises `ChannelClosed` once the channel is over and
`ProtocolError` for an outgoing frame over the limit.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any, Generic, TypeVar

import trio

from ..errors import ProtocolError
from .codec import DEFAULT_MAX_FRAME, FrameDecoder, encode_frame

M = TypeVar("M")

READ_CHUNK = 256 * 1024


class ChannelClosed(Exception):
    """Sending on a channel whose stream is closed or broken."""


class Channel(Generic[M]):
    def __init__(
        self, stream: trio.abc.Stream, incoming: Any, max_frame: int = DEFAULT_MAX_FRAME
    ) -> None:
        self._stream = stream
        self._decoder: FrameDecoder[M] = FrameDecoder(incoming, max_frame)
        self._max_frame = max_frame
        self._outbox: list[bytes] = []
        self._wake = trio.Event()
        self._writing = False
        self._fd = stream.socket.fileno() if isinstance(stream, trio.SocketStream) else None
        self._closed = False
        self.frames_sent = 0
        self.frames_received = 0

    @property
    def closed(self) -> bool:
        return self._closed

    def send(self, message: Any) -> None:
        if self._closed:
            raise ChannelClosed("channel is closed")
        frame = encode_frame(message, self._max_frame)
        self.frames_sent += 1
        if self._fd is not None and not self._writing and not self._outbox:
            try:
                written = os.write(self._fd, frame)
            except BlockingIOError:
                written = 0
            except OSError:  # broken: the reader will see EOF; the writer reports it
                written = 0
            if written == len(frame):
                return
            frame = frame[written:]
        self._outbox.append(frame)
        self._wake.set()

    def send_if_open(self, message: Any) -> bool:
        """Send unless the channel is closed; returns whether it was queued."""
        if self._closed:
            return False
        self.send(message)
        return True

    async def run(self, on_message: Callable[[M], None]) -> None:
        """Read and write until the peer closes; `on_message` is called for each message."""
        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self._write_loop, nursery.cancel_scope)
                await self._read_loop(on_message)
                nursery.cancel_scope.cancel()
        finally:
            self._closed = True
            with trio.CancelScope(shield=True):
                await self._stream.aclose()

    async def _read_loop(self, on_message: Callable[[M], None]) -> None:
        while True:
            try:
                data = await self._stream.receive_some(READ_CHUNK)
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                return
            if not data:
                if self._decoder.pending:
                    raise ProtocolError(
                        f"stream ended inside a frame ({self._decoder.pending} bytes pending)"
                    )
                return
            for message in self._decoder.feed(bytes(data)):
                self.frames_received += 1
                on_message(message)

    async def _write_loop(self, scope: trio.CancelScope) -> None:
        while True:
            await self._wake.wait()
            self._wake = trio.Event()
            frames, self._outbox = self._outbox, []
            if not frames:
                continue
            self._writing = True
            try:
                await self._stream.send_all(frames[0] if len(frames) == 1 else b"".join(frames))
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                self._closed = True
                scope.cancel()  # the peer stopped reading: the channel is over
                return
            finally:
                self._writing = False
