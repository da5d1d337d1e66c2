"""Plugin listeners: a port per plugin that declares one, bound while the plugin is enabled.

`ListenerManager.open(key, manifest)` binds the listener (its `[listeners]` entry, else
0.0.0.0 and the manifest's port; port 0 allowed) and serves `listener_app`'s ASGI app there;
`close(key)` shuts it down gracefully. `on_change` hears the bound URLs each time (run.json
follows them). A port that cannot be bound is recorded as the plugin's `listener_failed` event;
the server and the plugin go on.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import trio
from hypercorn.config import Config as HypercornConfig
from hypercorn.trio import serve as hypercorn_serve

from ..config import ListenerConfig
from ..errors import leaf
from ..packages.manifest import Manifest
from ..security.stream_tokens import StreamTokens
from ..store import records
from ..store.db import Database
from ..supervisor.supervisor import Supervisor
from .listener_app import ListenerSettings, create_listener_app

log = logging.getLogger(__name__)


@dataclass
class _Open:
    name: str
    url: str
    shutdown: trio.Event
    done: trio.Event = field(default_factory=trio.Event)


class ListenerManager:
    """Binds each enabled plugin's listener and tells `on_change` the bound URLs."""

    def __init__(
        self,
        db: Database,
        supervisor: Supervisor,
        streams: StreamTokens,
        settings: Mapping[str, str | ListenerConfig],
        on_change: Callable[[dict[str, str]], None],
    ) -> None:
        self.db, self.supervisor, self.streams = db, supervisor, streams
        self.settings = dict(settings)
        self.on_change = on_change
        self._open: dict[str, _Open] = {}
        self._nursery: trio.Nursery | None = None

    @property
    def urls(self) -> dict[str, str]:
        return {o.name: o.url for o in self._open.values()}

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            task_status.started()
            await trio.sleep_forever()

    async def open(self, key: str, manifest: Manifest) -> None:
        listener = manifest.listener
        if listener is None or key in self._open:
            return
        assert self._nursery is not None
        settings = ListenerSettings.of(manifest, self.settings.get(listener.name))
        app: Any = create_listener_app(
            key,
            manifest,
            settings,
            db=self.db,
            actors=self.supervisor.directory,
            streams=self.streams,
        )
        config = HypercornConfig()
        config.bind = [settings.bind]
        config.graceful_timeout = 1.0
        config.accesslog = None
        shutdown = trio.Event()
        entry = _Open(listener.name, "", shutdown)

        async def serve(task_status: trio.TaskStatus[list[str]]) -> None:
            try:
                await hypercorn_serve(
                    app, config, shutdown_trigger=shutdown.wait, task_status=task_status
                )
            finally:
                entry.done.set()

        failure = ""
        try:
            binds: list[str] = await self._nursery.start(serve)
        except* OSError as group:  # e.g. the port is taken: the server and the plugin go on
            failure = f"cannot bind {config.bind[0]}: {leaf(group)}"
        if failure:
            log.error("plugin %s: listener %s: %s", key, listener.name, failure)
            records.record_event(self.db, key, "listener_failed", reason=failure)
            return
        entry.url = next((b for b in binds if b.startswith("http://")), binds[0])
        self._open[key] = entry
        records.record_event(self.db, key, "listener_opened", reason=entry.url)
        self.on_change(self.urls)

    async def close(self, key: str) -> None:
        entry = self._open.pop(key, None)
        if entry is None:
            return
        entry.shutdown.set()
        with trio.move_on_after(5):
            await entry.done.wait()
        records.record_event(self.db, key, "listener_closed", reason=entry.url)
        self.on_change(self.urls)
