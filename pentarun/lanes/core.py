"""Core calls: what a worker may ask of the core (`ctx.core.call`, `ctx.store`).

Every call is checked in this order, whatever the worker sends:
  1. the token verifies (signature, expiry, generation) and belongs to the calling plugin;
  2. the call's property is one of the token's assigned properties (refusals are audited);
  3. the call name exists;  4. the token carries the call's scope.
Only then does the call run, confined to that one plugin and property.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import msgspec

from ..errors import BadRequest, NotFound, PentarunError, PropertyNotAssigned, ScopeDenied
from ..ipc.messages import CoreCall
from ..security.stream_tokens import StreamTokens
from ..security.tokens import PluginTokens
from ..store import records
from ..store.db import Database
from .cameras import CALLS as CAMERA_CALLS
from .request import CoreFn, CoreRequest

MAX_STATE_KEY = 256
MAX_STATE_VALUE = 64 * 1024


HookRunner = Callable[[str, str, dict[str, Any], str], Awaitable[dict[str, Any]]]


async def _no_hooks(name: str, prop: str, payload: dict[str, Any], caller: str) -> dict[str, Any]:
    return payload


class CoreApi:
    def __init__(self, db: Database, tokens: PluginTokens, streams: StreamTokens) -> None:
        self.db = db
        self.tokens = tokens
        self.streams = streams
        self._calls: dict[str, tuple[str | None, CoreFn]] = {}
        # (hook name, property, payload, calling plugin) -> payload; the supervisor sets it
        self.hook_runner: HookRunner = _no_hooks
        for name, fn in _STORE_CALLS.items():
            self.register(name, None, fn)
        self.register("properties.get", "properties:read", _property_get)
        for name, (scope, camera_fn) in CAMERA_CALLS.items():
            self.register(name, scope, camera_fn)

    def register(self, name: str, scope: str | None, fn: CoreFn) -> None:
        self._calls[name] = (scope, fn)

    async def handle(self, plugin_key: str, call: CoreCall) -> Any:
        try:
            claims = self.tokens.verify(call.token, plugin_key)
            if call.property not in claims.props:
                raise PropertyNotAssigned(
                    f"plugin {plugin_key!r} is not assigned to property {call.property!r}",
                    {"property": call.property},
                )
            entry = self._calls.get(call.name)
            if entry is None:
                raise NotFound(f"unknown core call {call.name!r}", {"call": call.name})
            scope, fn = entry
            if scope is not None and scope not in claims.scp:
                raise ScopeDenied(
                    f"core call {call.name!r} needs scope {scope!r}", {"scope": scope}
                )
        except PentarunError as exc:
            records.audit(
                self.db,
                f"plugin:{plugin_key}",
                "security.core_call_refused",
                plugin=plugin_key,
                property_id=call.property,
                detail={"call": call.name, "code": exc.error_code, "message": exc.message},
            )
            raise

        async def hooks(name: str, payload: dict[str, Any]) -> dict[str, Any]:
            return await self.hook_runner(name, call.property, payload, plugin_key)

        return await fn(
            CoreRequest(plugin_key, call.property, call.params, self.db, self.streams, hooks)
        )


def _key(request: CoreRequest) -> str:
    key = request.params.get("key")
    if not isinstance(key, str) or not 0 < len(key) <= MAX_STATE_KEY:
        raise BadRequest(f"store key must be a string of 1..{MAX_STATE_KEY} characters")
    return key


async def _store_get(r: CoreRequest) -> Any:
    found, value = records.state_get(r.db, r.plugin, r.property, _key(r))
    return {"found": found, "value": value}


async def _store_set(r: CoreRequest) -> None:
    value = r.params.get("value")
    if len(msgspec.msgpack.encode(value)) > MAX_STATE_VALUE:
        raise BadRequest(f"store value larger than {MAX_STATE_VALUE} bytes")
    await records.state_set(r.db, r.plugin, r.property, _key(r), value)


async def _store_delete(r: CoreRequest) -> None:
    await records.state_delete(r.db, r.plugin, r.property, _key(r))


async def _store_keys(r: CoreRequest) -> list[str]:
    return records.state_keys(r.db, r.plugin, r.property)


async def _property_get(r: CoreRequest) -> Any:
    row = records.get_property(r.db, r.property)
    if row is None:
        raise NotFound(f"property {r.property!r} not found")
    return {"id": row.id, "name": row.name}


_STORE_CALLS: dict[str, CoreFn] = {
    "store.get": _store_get,
    "store.set": _store_set,
    "store.delete": _store_delete,
    "store.keys": _store_keys,
}
