"""The per-call context a handler receives: its property, the core lane and its store."""

from __future__ import annotations

import math
from collections.abc import Awaitable, Callable
from typing import Any

import trio

CoreSender = Callable[[str, str, dict[str, Any]], Awaitable[Any]]


class CoreClient:
    """`await ctx.core.call("cameras.list")`: a token-checked core call for one property."""

    def __init__(self, send: CoreSender, property_id: str) -> None:
        self._send = send
        self._property = property_id

    async def call(self, name: str, /, **params: Any) -> Any:
        """The core's answer; raises `CoreCallError(code, message, status)` when it refuses,
        e.g. `bad_request` naming a parameter the call does not take (docs/protocol.md).
        `name` is positional only, so a call may take a parameter called `name`."""
        return await self._send(self._property, name, params)


class PluginStore:
    """Small values persisted by the core, per plugin and property; they survive restarts."""

    def __init__(self, core: CoreClient) -> None:
        self._core = core

    async def get(self, key: str, default: Any = None) -> Any:
        found = await self._core.call("store.get", key=key)
        return found["value"] if found["found"] else default

    async def set(self, key: str, value: Any) -> None:
        await self._core.call("store.set", key=key, value=value)

    async def delete(self, key: str) -> None:
        await self._core.call("store.delete", key=key)

    async def keys(self) -> list[str]:
        """Every key of this plugin and property, in order (the core answers in pages)."""
        keys: list[str] = []
        while True:
            page: list[str] = await self._core.call(
                "store.keys", after=keys[-1] if keys else "", limit=KEYS_PAGE
            )
            keys += page
            if len(page) < KEYS_PAGE:
                return keys


KEYS_PAGE = 1000  # the largest page `store.keys` answers


class PluginStorage:
    """Files kept by the core, per plugin and property; they survive restarts and upgrades and
    go with an uninstall. Needs scopes storage:read (`get`, `list`) and storage:write (`put`,
    `delete`).

    A name is segments of letters, digits, "_", "." and "-" (none starting with "." or "-")
    joined by "/", at most 200 characters: `"clips/2024-05-01.json"`. A file holds at most
    1 MiB and is replaced whole, atomically. The plugin's files (all properties) share a quota
    (the server's `[storage] quota_mb`): a `put` past it raises `CoreCallError` with code
    `storage_full` (409), details `used` and `limit` in bytes.
    """

    def __init__(self, core: CoreClient) -> None:
        self._core = core

    async def put(self, name: str, data: bytes) -> None:
        await self._core.call("storage.put", name=name, data=bytes(data))

    async def get(self, name: str) -> bytes | None:
        """The file's bytes, None when there is no such file."""
        data: bytes | None = await self._core.call("storage.get", name=name)
        return data

    async def list(self) -> list[str]:
        """Every file name of this plugin and property, in order (the core answers in pages)."""
        names: list[str] = []
        while True:
            page: list[dict[str, Any]] = await self._core.call(
                "storage.list", after=names[-1] if names else "", limit=STORAGE_PAGE
            )
            names += [entry["name"] for entry in page]
            if len(page) < STORAGE_PAGE:
                return names

    async def delete(self, name: str) -> bool:
        """Whether there was such a file."""
        existed: bool = await self._core.call("storage.delete", name=name)
        return existed


STORAGE_PAGE = 1000  # the largest page `storage.list` answers


class EventsClient:
    """`await ctx.events.publish("camera.tamper", {...})`: needs scope events:publish and the
    type declared under the manifest's `events.publish`; other subscribers of this property
    receive it."""

    def __init__(self, core: CoreClient) -> None:
        self._core = core

    async def publish(self, event_type: str, data: dict[str, Any] | None = None) -> int:
        delivered: int = await self._core.call("events.publish", type=event_type, data=data or {})
        return delivered


ANSWER_MARGIN = 0.05  # of the time left, kept for answering after the callee's timeout
MAX_ANSWER_MARGIN_S = 0.25


class PluginsClient:
    """`await ctx.plugins.call("nvr", "nvr.clips", camera="c1")`: a handler of a plugin this
    one depends on (its manifest `dependencies`), run for the same property, through the core
    (scope plugins:call). The callee gets what is left of this call's deadline; its errors
    come back as `CoreCallError` with its own code and status."""

    def __init__(self, core: CoreClient) -> None:
        self._core = core

    async def call(self, plugin: str, handler: str, /, **params: Any) -> Any:
        deadline = trio.current_effective_deadline()
        left_s = deadline - trio.current_time()
        # the callee's time runs out a little before this call's, so this handler can still
        # answer (with the callee's timeout) instead of timing out itself
        left_s -= min(MAX_ANSWER_MARGIN_S, left_s * ANSWER_MARGIN)
        left_ms = 0 if math.isinf(deadline) else max(1, int(left_s * 1000))
        return await self._core.call(
            "plugins.call", plugin=plugin, handler=handler, params=params, deadline_ms=left_ms
        )


class Context:
    def __init__(self, property_id: str, send: CoreSender, config: dict[str, Any]) -> None:
        self.property = property_id
        self.core = CoreClient(send, property_id)
        self.store = PluginStore(self.core)
        self.storage = PluginStorage(self.core)
        self.events = EventsClient(self.core)
        self.plugins = PluginsClient(self.core)
        self.config = config
