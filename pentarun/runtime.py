"""The root nursery: opens the store, starts the supervisor and the admin server; shutdown order.

store -> supervisor -> plugins -> admin server -> run.json -> ready
shutdown (SIGINT/SIGTERM or cancel): admin server drains, every worker stops, store closes.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import trio
from hypercorn.config import Config as HypercornConfig
from hypercorn.trio import serve as hypercorn_serve

from . import __version__
from .assembly import assemble
from .cameras.credentials import Sealer
from .cameras.hub import CameraHub
from .config import Config
from .datadir import lock_data_dir
from .gateway.app import Services, create_admin_app
from .gateway.listeners import ListenerManager
from .lanes.egress import EgressLane
from .lanes.feed import Feed
from .lanes.storage import StorageLane
from .packages.builder import pack, read_tree
from .packages.integrity import Integrity
from .packages.service import Installs
from .registry import Registry
from .sandbox.launcher import OFF_WARNING, Sandbox
from .security import ha_keys
from .security.operators import ensure_root, hash_token
from .security.stream_tokens import StreamTokens, load_secret
from .store import records
from .store.db import Database, open_database

log = logging.getLogger(__name__)

DEMO_PROPERTY = ("demo", "Demo property")
DEMO_CAMERAS = (("front-door", "Front door"), ("driveway", "Driveway"))
DEMO_KEY_FILE = "demo-ha.key"
BUNDLED_PLUGINS = Path(__file__).resolve().parent.parent / "plugins"


@dataclass
class Options:
    plugin_dirs: list[Path] = field(default_factory=list)
    demo: bool = False


def _hypercorn_config(bind: str) -> HypercornConfig:
    cfg = HypercornConfig()
    cfg.bind = [bind]
    cfg.graceful_timeout = 1.0
    cfg.accesslog = None
    cfg.errorlog = logging.getLogger("hypercorn.error")
    return cfg


def _first_http_url(binds: list[str]) -> str:
    return next((b for b in binds if b.startswith("http://")), binds[0])


async def run_server(
    config: Config,
    options: Options,
    *,
    task_status: trio.TaskStatus[Services] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Run until SIGINT/SIGTERM or cancellation; reports the Services once ready."""
    data_dir = Path(await trio.Path(config.server.data_dir).absolute())
    with lock_data_dir(data_dir):
        await _serve(config, options, data_dir, task_status)


async def _serve(
    config: Config, options: Options, data_dir: Path, task_status: trio.TaskStatus[Services]
) -> None:
    async with open_database(data_dir / "pentarun.db") as db, trio.open_nursery() as nursery:
        token_file = await ensure_root(db, data_dir)
        if token_file is not None:
            log.warning("created the root operator token in %s", token_file)
        streams = StreamTokens(
            await trio.to_thread.run_sync(load_secret, data_dir / "stream.secret")
        )
        sandbox = await _check_sandbox(config, data_dir, db)
        feed = Feed()
        db.observers.append(feed.observe)
        # one digest cache for starts, restarts and releases; every installed tree has a row
        tree_checks = Integrity(db, installed_root=data_dir / "plugins")
        egress = EgressLane(
            db,
            config.egress,
            data_dir,
            socket_owner=sandbox.uid_of,
        )
        await nursery.start(egress.run)
        sealer = await trio.to_thread.run_sync(Sealer.load, data_dir)
        cameras = CameraHub(db, sealer, config.cameras)
        await nursery.start(cameras.run)
        platform = assemble(
            config.supervisor,
            db,
            streams=streams,
            on_published=feed.publish,
            sandbox=sandbox if sandbox.on else None,
            start_check=tree_checks.verify_before_start,
            egress=egress,
            cameras=cameras,
            storage=StorageLane(data_dir / "storage", config.storage),
            recordings_dir=Path(config.recordings.dir or data_dir / "recordings"),
            recordings_config=config.recordings,
        )
        assert platform.recordings is not None and platform.motion is not None
        await nursery.start(platform.recordings.run)
        await nursery.start(platform.motion.run)
        supervisor = platform.supervisor
        await nursery.start(supervisor.run)

        def listeners_changed(urls: dict[str, str]) -> None:
            services.listeners = urls
            if services.admin_url:
                services.write_run_file()

        listeners = ListenerManager(
            db, supervisor, streams, dict(config.listeners), listeners_changed
        )
        # the install service starts workers and opens their listeners (one start path)
        installs = Installs(config, data_dir, db, supervisor, listeners, integrity=tree_checks)
        registry = Registry(db, supervisor, installs)
        services = Services(
            config,
            data_dir,
            db,
            supervisor,
            platform.events,
            registry,
            installs,
            feed,
            sandbox,
            cameras=cameras,
            recordings=platform.recordings,
        )
        await nursery.start(listeners.run)
        await nursery.start(installs.run)  # resumes interrupted installs, starts enabled plugins
        try:
            for plugin_dir in options.plugin_dirs:
                await services.registry.run_from_source(plugin_dir)
            if options.demo:
                await _seed_demo(services)

            shutdown = trio.Event()
            app = create_admin_app(services)
            binds = await nursery.start(
                lambda task_status: hypercorn_serve(
                    app,
                    _hypercorn_config(config.server.admin_bind),
                    shutdown_trigger=shutdown.wait,
                    task_status=task_status,
                )
            )
            services.admin_url = _first_http_url(binds)
            services.write_run_file()
            services.ready.set()
            log.info("pentarun %s: admin API on %s", __version__, services.admin_url)
            task_status.started(services)
            await _wait_for_signal()
            log.info("shutting down")
            services.ready = trio.Event()
            shutdown.set()
        finally:
            with trio.CancelScope(shield=True):
                await supervisor.stop_all(config.supervisor.stop_timeout_s * 2 + 1)
                await db.flush()
                services.remove_run_file()
            nursery.cancel_scope.cancel()


async def _check_sandbox(config: Config, data_dir: Path, db: Database) -> Sandbox:
    """Try the sandbox once and say loudly how it stands: off (the operator's choice, also
    audited) or unavailable (no worker will start, and /readyz says why)."""
    sandbox = Sandbox(config.security, data_dir)
    status = await trio.to_thread.run_sync(sandbox.check)
    if status.mode == "off":
        log.warning("*" * 78)
        log.warning("%s", OFF_WARNING)
        log.warning("*" * 78)
        records.audit(db, "server", "security.sandbox_off", risk_score=100, detail={})
    elif not status.ok:
        log.error("the sandbox cannot be set up, so no plugin worker will start: %s", status.reason)
    else:
        log.info("plugin workers run sandboxed (bubblewrap, seccomp, cgroups)")
    return sandbox


async def _wait_for_signal() -> None:
    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async for signum in signals:
            log.info("received %s", signal.Signals(signum).name)
            return


async def _seed_demo(services: Services) -> None:
    """A demo property with cameras, every bundled plugin installed through the real pipeline
    and enabled for it, and a fresh Home Assistant key (kept in `services.demo_key`)."""
    db = services.db
    pid, name = DEMO_PROPERTY
    if records.get_property(db, pid) is None:
        await records.create_property(db, pid, name)
    for camera_id, camera_name in DEMO_CAMERAS:
        if records.get_camera(db, pid, camera_id) is None:
            await records.create_camera(
                db, pid, camera_id, name=camera_name, source={"kind": "demo"}
            )
    roots = sorted(p for p in BUNDLED_PLUGINS.iterdir() if (p / "definition.json").is_file())
    for root in roots:
        files = await trio.to_thread.run_sync(read_tree, root)
        definition = json.loads(files["definition.json"])
        key, version = definition["key"], definition["version"]
        installed = records.get_plugin(db, key)
        if installed is None or installed.version != version or installed.state == "REJECTED":
            await services.installs.upload(pack(files, "pentavision"), "demo")
        with trio.fail_after(300):
            settled = await services.installs.wait_settled(key)
        if settled.job["stage"] == "REJECTED":
            raise RuntimeError(f"the bundled plugin {key} was rejected: {settled.job['reason']}")
        await services.installs.enable(key, [pid], "demo")
    services.demo_key = await _demo_key(db, services.data_dir, pid)


async def _demo_key(db: Database, data_dir: Path, property_id: str) -> str:
    """The demo's Home Assistant key: the one of an earlier demo start while it is still valid
    (kept in `<data_dir>/demo-ha.key`, mode 0600), else a new one."""
    path = trio.Path(data_dir / DEMO_KEY_FILE)
    if await path.exists():
        key_text = (await path.read_text()).strip()
        row = records.ha_key_by_hash(db, hash_token(key_text))
        if row is not None and row.property_id == property_id:  # unrevoked by the query
            return key_text
    key_text = ha_keys.new_key()
    await records.create_ha_key(db, uuid.uuid4().hex, property_id, hash_token(key_text), "demo")
    await trio.to_thread.run_sync(_write_secret, Path(path), key_text + "\n")
    return key_text


def _write_secret(path: Path, text: str) -> None:
    tmp = path.with_suffix(".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(text)
    tmp.replace(path)
