"""The supervisor's directory: plugin key -> its actor, and who serves a property.

The one place the gateway, the lanes and the install service ask "which worker is this
plugin's" and "which workers serve this property". It holds no policy; the supervisor adds
and removes entries as actors start and stop.
"""

from __future__ import annotations

from collections.abc import Iterator

from ..errors import WorkerUnavailable
from .actor import WorkerActor


class Directory:
    def __init__(self) -> None:
        self._actors: dict[str, WorkerActor] = {}

    def get(self, key: str) -> WorkerActor | None:
        return self._actors.get(key)

    def require(self, key: str, state: str = "") -> WorkerActor:
        """The plugin's actor, or WorkerUnavailable naming the plugin's stored `state`."""
        actor = self._actors.get(key)
        if actor is None:
            raise WorkerUnavailable(
                f"plugin {key!r} has no worker" + (f" ({state})" if state else ""),
                {"plugin": key, "state": state},
            )
        return actor

    def serving(self, property_id: str) -> list[WorkerActor]:
        """Running actors assigned to this property, by plugin key."""
        return [a for _, a in sorted(self._actors.items()) if a.serves(property_id)]

    def __iter__(self) -> Iterator[WorkerActor]:
        return iter([a for _, a in sorted(self._actors.items())])

    def __contains__(self, key: object) -> bool:
        return key in self._actors

    def __len__(self) -> int:
        return len(self._actors)

    # --- the supervisor's side -------------------------------------------------------------

    def add(self, actor: WorkerActor) -> None:
        if actor.key in self._actors:
            raise ValueError(f"plugin {actor.key!r} already has an actor")
        self._actors[actor.key] = actor

    def remove(self, key: str) -> WorkerActor | None:
        return self._actors.pop(key, None)
