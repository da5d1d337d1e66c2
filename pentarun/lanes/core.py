"""Core calls: what a worker may ask of the core (`ctx.core.call`, `ctx.store`).

Every call is checked in this order, whatever the worker sends:
  1. the token verifies (signature, expiry, generation) and belongs to the calling plugin;
  2. the call's property is one of the token's assigned properties;
  3. the call name exists;  4. the token carries the call's scope;
  5. the params decode into the call's Struct (`lanes/calls.py`): a parameter the call does
     not take is refused by name, and one naming another property is a cross-property attempt.
Only then does the call run, confined to that one plugin and property, with typed params.
Every refusal — these five and a handler's own permission refusal (`CoreRequest.refuse`) — is
audited with a risk score from `calls.refusal_risk`; what the worker chose (call name,
property, the error's message) is clipped before it is written.

The plugin's store is bounded (`calls.MAX_STATE_KEYS` keys per property, `store.keys` in pages
of at most `calls.MAX_KEYS_PAGE`), so its reads on the trio thread are small indexed reads and
its answers always fit a frame. A full store refuses a new key (409 `store_full`, not audited:
it is a quota, not a security refusal), and so does a value that would take what the plugin
holds (its values' bytes, all properties) past `store_max_bytes` (config `[storage] store_mb`).
"""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable
from typing import Any

from ..cameras.hub import CameraHub
from ..config import StorageConfig
from ..errors import (
    BadRequest,
    NotFound,
    PentarunError,
    PropertyNotAssigned,
    ScopeDenied,
    StoreFull,
    TokenInvalid,
)
from ..ipc.messages import CoreCall
from ..recordings.service import Recordings
from ..security.stream_tokens import StreamTokens
from ..security.tokens import PluginClaims, PluginTokens
from ..store import records
from ..store.db import Database
from .calls import (
    CONTRACTS,
    MAX_STATE_KEYS,
    TOKEN_REFUSALS,
    Contract,
    NoParams,
    Params,
    Refusal,
    StoreKeyParams,
    StoreKeysParams,
    StoreSetParams,
    audit_type,
    clip,
    decode_params,
    foreign_property,
    refusal_risk,
)
from .cameras import CameraCalls
from .recordings import RecordingCalls
from .request import CoreFn, CoreRequest

MAX_MESSAGE_SHOWN = 300  # characters of a refusal's message an audit row keeps
MIB = 1024 * 1024
STORE_MAX_BYTES = StorageConfig().store_mb * MIB  # the default of `[storage] store_mb`
HookRunner = Callable[[str, str, dict[str, Any], str], Awaitable[dict[str, Any]]]


async def _no_hooks(name: str, prop: str, payload: dict[str, Any], caller: str) -> dict[str, Any]:
    return payload


class CoreApi:
    def __init__(
        self,
        db: Database,
        tokens: PluginTokens,
        streams: StreamTokens,
        *,
        hook_runner: HookRunner = _no_hooks,
        publish: CoreFn | None = None,
        cameras: CameraHub | None = None,
        store_max_bytes: int = STORE_MAX_BYTES,
        recordings: Recordings | None = None,
    ) -> None:
        """`hook_runner` runs a hook: (hook name, property, payload, calling plugin) -> payload;
        `publish` is the `events.publish` handler (or `register` it later); `cameras` serves
        frames (None: a hub that is not running, so demo cameras only); `store_max_bytes`
        bounds the bytes of each plugin's `ctx.store` values."""
        self.db = db
        self.tokens = tokens
        self.streams = streams
        self.hook_runner = hook_runner
        self._handlers: dict[str, CoreFn] = {
            **_STORE_HANDLERS,
            "store.set": functools.partial(_store_set, max_bytes=store_max_bytes),
            "properties.get": _property_get,
            **CameraCalls(cameras or CameraHub()).handlers(),
            # None: no recordings kept here (the calls answer 503 recordings_unavailable)
            **RecordingCalls(recordings).handlers(),
        }
        if publish is not None:
            self.register("events.publish", "events:publish", publish)

    def register(self, name: str, scope: str | None, fn: CoreFn) -> None:
        """Bind the handler of a call declared in `calls.CONTRACTS` (with that scope)."""
        contract = CONTRACTS.get(name)
        if contract is None or contract.scope != scope:
            raise ValueError(f"core call {name!r} with scope {scope!r} is not in CONTRACTS")
        self._handlers[name] = fn

    async def handle(self, plugin_key: str, call: CoreCall) -> Any:
        contract, fn, params = self._admit(plugin_key, call)

        async def hooks(name: str, payload: dict[str, Any]) -> dict[str, Any]:
            return await self.hook_runner(name, call.property, payload, plugin_key)

        def refuse(error: PentarunError) -> PentarunError:
            return self._refused(plugin_key, call, Refusal.FORBIDDEN, error, scope=contract.scope)

        request = CoreRequest(plugin_key, call.property, self.db, self.streams, hooks, refuse)
        return await fn(request, params)

    def _admit(self, plugin_key: str, call: CoreCall) -> tuple[Contract, CoreFn, Params]:
        """The checks of the module docstring, in order; each refusal audited, then raised."""
        claims = self._verify(plugin_key, call)
        if call.property not in claims.props:
            raise self._refused(
                plugin_key,
                call,
                Refusal.PROPERTY_NOT_ASSIGNED,
                PropertyNotAssigned(
                    f"plugin {plugin_key!r} is not assigned to property {clip(call.property)!r}",
                    {"property": clip(call.property, 200)},
                ),
            )
        contract, fn = CONTRACTS.get(call.name), self._handlers.get(call.name)
        if contract is None or fn is None:
            raise self._refused(
                plugin_key,
                call,
                Refusal.UNKNOWN_CALL,
                NotFound(f"unknown core call {clip(call.name)!r}", {"call": clip(call.name)}),
            )
        if contract.scope is not None and contract.scope not in claims.scp:
            raise self._refused(
                plugin_key,
                call,
                Refusal.SCOPE_DENIED,
                ScopeDenied(
                    f"core call {call.name!r} needs scope {contract.scope!r}",
                    {"scope": contract.scope},
                ),
                scope=contract.scope,
            )
        try:
            params = decode_params(call.name, contract, call.params)
        except BadRequest as exc:
            named = foreign_property(call.params, call.property)
            if named is None:
                raise self._refused(
                    plugin_key, call, Refusal.BAD_PARAMETERS, exc, scope=contract.scope
                ) from None
            raise self._refused(
                plugin_key,
                call,
                Refusal.CROSS_PROPERTY_PARAMETER,
                exc,
                scope=contract.scope,
                extra={"named_property": named},
            ) from None
        return contract, fn, params

    def _verify(self, plugin_key: str, call: CoreCall) -> PluginClaims:
        try:
            return self.tokens.verify(call.token, plugin_key)
        except TokenInvalid as exc:
            refusal = TOKEN_REFUSALS.get(str(exc.details.get("reason")), Refusal.FORGED_TOKEN)
            raise self._refused(plugin_key, call, refusal, exc) from None

    def _refused(
        self,
        plugin_key: str,
        call: CoreCall,
        refusal: Refusal,
        error: PentarunError,
        *,
        scope: str | None = None,
        extra: dict[str, Any] | None = None,
    ) -> PentarunError:
        """Audit a refusal with its risk score; returns `error` for the caller to raise."""
        records.audit(
            self.db,
            f"plugin:{plugin_key}",
            audit_type(refusal),
            plugin=plugin_key,
            property_id=clip(call.property, 200),
            risk_score=refusal_risk(refusal, scope),
            detail={
                "call": clip(call.name),
                "refusal": refusal.value,
                "code": clip(error.error_code),
                "message": clip(error.message, MAX_MESSAGE_SHOWN),
                **({"scope": scope} if scope else {}),
                **(extra or {}),
            },
        )
        return error


async def _store_get(r: CoreRequest, p: StoreKeyParams) -> dict[str, Any]:
    found, value = records.state_get(r.db, r.plugin, r.property, p.key)
    return {"found": found, "value": value}


async def _store_set(r: CoreRequest, p: StoreSetParams, *, max_bytes: int) -> None:
    refused = await records.state_set(
        r.db, r.plugin, r.property, p.key, p.value, max_keys=MAX_STATE_KEYS, max_bytes=max_bytes
    )
    if refused is None:
        return
    if refused.limit == "keys":
        raise StoreFull(
            f"plugin {r.plugin!r} already holds {MAX_STATE_KEYS} keys in property "
            f"{r.property!r}: delete some before adding {clip(p.key)!r}",
            {"reason": "keys", "used": refused.held, "limit": MAX_STATE_KEYS, "key": clip(p.key)},
        )
    raise StoreFull(
        f"plugin {r.plugin!r} holds {refused.held} bytes in its store, and {clip(p.key)!r} "
        f"would take it past its quota of {max_bytes} bytes: delete or shrink some values",
        {"reason": "bytes", "used": refused.held, "limit": max_bytes, "key": clip(p.key)},
    )


async def _store_delete(r: CoreRequest, p: StoreKeyParams) -> None:
    await records.state_delete(r.db, r.plugin, r.property, p.key)


async def _store_keys(r: CoreRequest, p: StoreKeysParams) -> list[str]:
    """One page (`calls.StoreKeysParams`): a bounded index range read, small enough inline."""
    return records.state_keys(r.db, r.plugin, r.property, after=p.after, limit=p.limit)


async def _property_get(r: CoreRequest, p: NoParams) -> dict[str, Any]:
    row = records.get_property(r.db, r.property)
    if row is None:
        raise NotFound(f"property {r.property!r} not found")
    return {"id": row.id, "name": row.name}


_STORE_HANDLERS: dict[str, CoreFn] = {
    "store.get": _store_get,
    "store.delete": _store_delete,
    "store.keys": _store_keys,
}
