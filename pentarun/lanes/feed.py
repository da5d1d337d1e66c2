"""The live feed: lifecycle, quarantine and security events, broadcast to subscribers.

`publish()` never blocks: each subscriber has a bounded buffer, and one that falls behind is
disconnected (its stream ends; clients reconnect) rather than slowing anyone else down.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import trio

BUFFER = 256
FED_AUDIT_PREFIXES = ("security.", "package.refused")  # quarantines come as lifecycle events


class Feed:
    def __init__(self, buffer: int = BUFFER) -> None:
        self._buffer = buffer
        self._subscribers: set[trio.MemorySendChannel[dict[str, Any]]] = set()

    @property
    def subscribers(self) -> int:
        return len(self._subscribers)

    def publish(self, event: dict[str, Any]) -> None:
        event.setdefault("at", time.time())
        for subscriber in list(self._subscribers):
            try:
                subscriber.send_nowait(event)
            except (trio.WouldBlock, trio.BrokenResourceError, trio.ClosedResourceError):
                self._subscribers.discard(subscriber)
                subscriber.close()

    def observe(self, kind: str, fields: dict[str, Any]) -> None:
        """Database observer: plugin events and security audit records become feed events."""
        if kind == "event":
            self.publish({**fields, "type": f"plugin.{fields.pop('type')}"})
        elif kind == "audit" and str(fields.get("type", "")).startswith(FED_AUDIT_PREFIXES):
            self.publish(dict(fields))

    @asynccontextmanager
    async def subscribe(self) -> AsyncIterator[trio.MemoryReceiveChannel[dict[str, Any]]]:
        send, receive = trio.open_memory_channel[dict[str, Any]](self._buffer)
        self._subscribers.add(send)
        try:
            yield receive
        finally:
            self._subscribers.discard(send)
            send.close()
