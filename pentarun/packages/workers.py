"""The one path by which a plugin's worker starts and stops, installed or run from source.

Starting a plugin means: its tree checked (`check`, integrity.py: an installed tree must
hold exactly what was installed), its actor for this tree and manifest (kept when unchanged),
released if it sat in quarantine, started, and its listener opened through the `PluginPorts`
given at construction. A tree that differs starts nothing: `refused(key, tree, problems)`
hears of it (the install service records the evidence and quarantines the plugin). Stopping
closes the listener too. Nothing else starts workers for plugins (restarts after a crash
happen in the supervisor's actor, which is given the same check).

Handing over (an upgrade of a running plugin; a live reload): `hand_over(key, root,
manifest)` checks the new tree and starts its worker beside the running one
(`Supervisor.succeed`); it answers a `Handover` once the new worker passed its handshake, or
`StartFailed` with the old worker untouched. `Handover.commit()` routes every new call and
stream to the new worker and drains the old one (`drained()` reports); the listener stays
bound throughout (its routes follow the serving worker's manifest), and is bound again only
when the new manifest declares it differently. `Handover.abandon()` stops the new worker
instead, the old one serving on.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Protocol

from ..supervisor.actor import WorkerActor
from ..supervisor.handover import DrainReport, StartFailed
from ..supervisor.policy import Phase
from ..supervisor.supervisor import Succession, Supervisor
from . import installer
from .integrity import StartCheck
from .manifest import Manifest
from .problems import Problem

Refused = Callable[[str, Path, list[Problem]], None]


class PluginPorts(Protocol):
    """What else a running plugin needs bound (the gateway's listeners)."""

    async def open(self, key: str, manifest: Manifest) -> None: ...

    async def close(self, key: str) -> None: ...


class NoPorts:
    """For runtimes without listeners (tools, tests): nothing to bind."""

    async def open(self, key: str, manifest: Manifest) -> None:
        return None

    async def close(self, key: str) -> None:
        return None


async def unchecked(key: str, tree: Path) -> list[Problem]:
    return []


def ignore(key: str, tree: Path, problems: list[Problem]) -> None:
    return None


def listener_changed(old: Manifest | None, new: Manifest) -> bool:
    """Whether a hand over from `old` to `new` must bind the plugin's listener again (its
    declaration differs: name, port, rate limit); routes alone never need it."""
    return (old.listener if old is not None else None) != new.listener


class Handover:
    """A new worker for `key`, RUNNING beside the one serving, not yet taking calls."""

    def __init__(self, workers: Workers, succession: Succession, manifest: Manifest) -> None:
        self.workers = workers
        self.succession = succession
        self.manifest = manifest
        self.key = succession.successor.key
        predecessor = succession.predecessor
        self.previous = predecessor.manifest if predecessor is not None else None
        self.committed = False

    @property
    def actor(self) -> WorkerActor:
        return self.succession.successor

    async def commit(self, reason: str) -> None:
        """Every new call and stream goes to the new worker from now on; the old one drains
        (`reason` is its stop reason) and its listener is kept unless it must be bound anew."""
        self.workers.supervisor.promote(self.succession, reason)
        self.committed = True
        if listener_changed(self.previous, self.manifest):
            await self.workers.ports.close(self.key)
            await self.workers.ports.open(self.key, self.manifest)

    async def abandon(self, reason: str) -> None:
        """Stop the new worker; the old one serves on as if nothing happened."""
        await self.workers.supervisor.abandon(self.succession, reason)

    async def drained(self) -> DrainReport:
        """Once committed: the old worker's drain, when it is over (the caller bounds it)."""
        return await self.succession.drained()


class Workers:
    def __init__(
        self,
        supervisor: Supervisor,
        ports: PluginPorts,
        *,
        check: StartCheck = unchecked,
        refused: Refused = ignore,
    ) -> None:
        self.supervisor = supervisor
        self.ports = ports
        self.check = check
        self.refused = refused

    async def start(self, key: str, root: Path, manifest: Manifest) -> WorkerActor | None:
        """The started actor, or None when `root` failed the integrity check (nothing ran)."""
        problems = await self.check(key, root)
        if problems:
            self.refused(key, root, problems)
            return None
        spec = installer.worker_spec(key, root, manifest.resources.memory_limit)
        actor = await self.supervisor.replace(spec, manifest)
        if actor.phase is Phase.QUARANTINED:
            actor.release()
        actor.start()
        await self.ports.open(key, manifest)
        return actor

    async def hand_over(self, key: str, root: Path, manifest: Manifest) -> Handover | StartFailed:
        """Start `root`'s worker beside the plugin's running one and wait (bounded by the
        startup timeout) until it passed its handshake: a Handover to commit or abandon, or
        StartFailed with nothing changed (a tree that fails its check never runs)."""
        problems = await self.check(key, root)
        if problems:
            listed = "; ".join(f"{p.code} at {p.path}: {p.message}" for p in problems)
            return StartFailed(f"the new tree failed its integrity check: {listed}")
        spec = installer.worker_spec(key, root, manifest.resources.memory_limit)
        outcome = await self.supervisor.succeed(spec, manifest)
        if isinstance(outcome, StartFailed):
            return outcome
        return Handover(self, outcome, manifest)

    async def stop(self, key: str, reason: str) -> None:
        """Stop the worker (its actor stays, for its history) and close its listener."""
        actor = self.supervisor.directory.get(key)
        if actor is not None:
            actor.stop(reason)
        await self.ports.close(key)

    async def remove(self, key: str, reason: str) -> None:
        """Close the listener, stop the worker and drop its actor (uninstall, upgrade)."""
        await self.ports.close(key)
        await self.supervisor.remove(key, reason)

    def refresh_token(self, key: str) -> None:
        """The plugin's assignments changed: its workers (one draining during a hand over too)
        get a token that says so; the plugin's older tokens are revoked once."""
        for n, actor in enumerate(self.supervisor.directory.actors_of(key)):
            if n == 0:
                actor.refresh_token()
            else:
                actor.refresh_token(revoke=False)
