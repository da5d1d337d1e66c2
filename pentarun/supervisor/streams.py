"""A streamed answer from a worker, as the gateway consumes it."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable

import trio

from ..ipc.messages import Cancel, StreamCredit, StreamEnd, StreamStart


class StreamReply:
    """A streamed answer: `start` has status and headers; iterate `chunks()`; `close()` ends it.

    Each chunk taken grants the worker credit for one more, so a slow client slows the worker.
    Callbacks given to `when_closed` run once, when the consumer closes it (every consumer
    does, in a `finally`): the actor counts its open streams with them (a drain waits for them).
    """

    def __init__(
        self,
        start: StreamStart,
        chunks: trio.MemoryReceiveChannel[bytes | StreamEnd],
        send: Callable[[object], bool],
    ) -> None:
        self.start = start
        self._chunks = chunks
        self._send = send
        self._closed = False
        self._on_close: list[Callable[[], None]] = []

    def when_closed(self, callback: Callable[[], None]) -> None:
        self._on_close.append(callback)

    async def chunks(self) -> AsyncIterator[bytes]:
        async for item in self._chunks:
            if isinstance(item, StreamEnd):
                self._closed = True
                return
            self._send(StreamCredit(self.start.id, 1))
            yield item

    def close(self) -> None:
        """The client went away (or the stream ended): stop the worker's side."""
        if not self._closed:
            self._closed = True
            self._send(Cancel(self.start.id))
        self._chunks.close()
        callbacks, self._on_close = self._on_close, []
        for callback in callbacks:
            callback()
