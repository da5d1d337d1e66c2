"""Wires the supervisor to the lanes its workers reach: one place for the server and the gates.

    platform = assemble(config, db, streams=..., on_published=...)

The directory (key -> actor) is made first and handed to the lanes that look workers up (events,
hooks); the core-call API gets the hook runner and the event publisher as constructor
arguments; the supervisor gets the core API, the directory and the observers of its actors'
events. Nothing is patched on after construction, and the supervisor imports no lane.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .cameras.hub import CameraHub
from .cameras.motion_watch import MotionWatch
from .config import RecordingsConfig, SupervisorConfig
from .lanes.calls import CONTRACTS
from .lanes.core import STORE_MAX_BYTES, CoreApi
from .lanes.events import EventLane
from .lanes.hooks import HookLane
from .lanes.plugins import PluginCalls
from .lanes.storage import StorageLane
from .packages.integrity import StartCheck
from .recordings.service import Recordings
from .sandbox.launcher import Sandbox
from .security.stream_tokens import StreamTokens
from .security.tokens import PluginTokens
from .store.db import Database
from .supervisor.directory import Directory
from .supervisor.events import Observers
from .supervisor.supervisor import EgressPort, Supervisor


@dataclass(frozen=True)
class Platform:
    supervisor: Supervisor
    directory: Directory
    observers: Observers
    tokens: PluginTokens
    core: CoreApi
    events: EventLane
    hooks: HookLane
    recordings: Recordings | None = None  # run by the runtime (None: none kept)
    motion: MotionWatch | None = None  # run by the runtime


def _ignore(event: dict[str, Any]) -> None:
    return None


def assemble(
    config: SupervisorConfig,
    db: Database,
    *,
    streams: StreamTokens | None = None,
    on_published: Callable[[dict[str, Any]], None] = _ignore,
    sandbox: Sandbox | None = None,
    start_check: StartCheck | None = None,
    egress: EgressPort | None = None,
    cameras: CameraHub | None = None,
    storage: StorageLane | None = None,
    recordings_dir: Path | None = None,
    recordings_config: RecordingsConfig | None = None,
) -> Platform:
    """The supervisor and its lanes; `on_published` sees every platform event (the feed);
    `sandbox` starts every worker (None: unsandboxed); `cameras` serves camera frames (None:
    demo cameras only); `storage` keeps plugins' files (None: no `storage.*` calls) and sets
    their `ctx.store` byte quota."""
    directory, observers, tokens = Directory(), Observers(), PluginTokens()
    events = EventLane(directory, on_published)
    hooks = HookLane(db, directory)
    # clips under `recordings_dir` (None: no recordings.* calls); the motion watch publishes
    # camera.motion and asks for clips; both read frames from the one camera hub
    hub = cameras or CameraHub()
    recordings = (
        Recordings(db, hub, recordings_dir, recordings_config or RecordingsConfig(), events.publish)
        if recordings_dir is not None
        else None
    )
    motion = MotionWatch(
        db, hub, events.publish, on_motion=recordings.on_motion if recordings else None
    )
    core = CoreApi(
        db,
        tokens,
        streams or StreamTokens(secrets.token_bytes(32)),
        hook_runner=hooks.run,
        publish=events.core_publish,
        cameras=hub,
        recordings=recordings,
        store_max_bytes=storage.store_max_bytes if storage is not None else STORE_MAX_BYTES,
    )
    for name, fn in (storage.handlers() if storage is not None else {}).items():
        core.register(name, CONTRACTS[name].scope, fn)
    plugin_calls = PluginCalls(db, directory, config.call_timeout_s)
    core.register("plugins.call", "plugins:call", plugin_calls.handle)
    supervisor = Supervisor(
        config,
        db,
        tokens,
        core,
        directory=directory,
        observers=observers,
        sandbox=sandbox,
        start_check=start_check,
        egress=egress,
    )
    return Platform(
        supervisor, directory, observers, tokens, core, events, hooks, recordings, motion
    )
