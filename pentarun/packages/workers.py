"""The one path by which a plugin's worker starts and stops, installed or run from source.

Starting a plugin means: its tree checked (`check`, integrity.py: an installed tree must
hold exactly what was installed), its actor for this tree and manifest (kept when unchanged),
released if it sat in quarantine, started, and its listener opened through the `PluginPorts`
given at construction. A tree that differs starts nothing: `refused(key, tree, problems)`
hears of it (the install service records the evidence and quarantines the plugin). Stopping
closes the listener too. Nothing else starts workers for plugins (restarts after a crash
happen in the supervisor's actor, which is given the same check).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Protocol

from ..supervisor.actor import WorkerActor
from ..supervisor.policy import Phase
from ..supervisor.supervisor import Supervisor
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
        """The plugin's assignments changed: its worker gets a token that says so."""
        actor = self.supervisor.directory.get(key)
        if actor is not None:
            actor.refresh_token()
