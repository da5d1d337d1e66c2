"""What a core call handler receives: the calling plugin, its property, the params."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from ..security.stream_tokens import StreamTokens
from ..store.db import Database


@dataclass(frozen=True)
class CoreRequest:
    plugin: str
    property: str
    params: dict[str, Any]
    db: Database
    streams: StreamTokens
    # runs a hook for this request's property: (name, payload) -> payload
    hooks: Callable[[str, dict[str, Any]], Awaitable[dict[str, Any]]]


CoreFn = Callable[[CoreRequest], Awaitable[Any]]
