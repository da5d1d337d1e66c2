"""What a core call handler receives: the calling plugin and its property (a `CoreRequest`),
and the call's typed parameters (a Struct of `lanes/calls.py`), never the wire's dict."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from ..errors import PentarunError
from ..security.stream_tokens import StreamTokens
from ..store.db import Database


@dataclass(frozen=True)
class CoreRequest:
    plugin: str
    property: str
    db: Database
    streams: StreamTokens
    # runs a hook for this request's property: (name, payload) -> payload
    hooks: Callable[[str, dict[str, Any]], Awaitable[dict[str, Any]]]
    # audits a handler's permission refusal (scored by the call's scope) and returns it:
    # `raise r.refuse(Forbidden(...))`
    refuse: Callable[[PentarunError], PentarunError]


CoreFn = Callable[[CoreRequest, Any], Awaitable[Any]]
