"""The supervisor's directory: plugin key -> its actor, and who serves a property.

The one place the gateway, the lanes and the install service ask "which worker is this
plugin's" and "which workers serve this property". It holds no policy; the supervisor adds
and removes entries as actors start and stop.

A key has at most one *routed* actor: the one `get`, `serving` and iteration name, which
takes every new call. During a hand over (handover.py) a key also has a *successor* (the new
version's actor, starting beside the routed one, taking no calls yet) and, once the successor
is promoted, any number of *draining* actors (older ones finishing their calls and streams
before they stop). Invariants: an actor holds one role at most; a successor is never routed
before `promote`; `promote` makes the previous routed actor draining, never drops it.
"""

from __future__ import annotations

import enum
from collections.abc import Iterator

from ..errors import WorkerUnavailable
from .actor import WorkerActor


class Role(enum.StrEnum):
    ROUTED = "routed"
    SUCCESSOR = "successor"
    DRAINING = "draining"


class Directory:
    def __init__(self) -> None:
        self._actors: dict[str, WorkerActor] = {}  # routed
        self._successors: dict[str, WorkerActor] = {}
        self._draining: dict[str, list[WorkerActor]] = {}

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

    # --- every role ---------------------------------------------------------------------------

    def actors_of(self, key: str) -> list[WorkerActor]:
        """Every actor of the plugin: routed, successor, then draining (oldest first)."""
        found = [self._actors[key]] if key in self._actors else []
        if key in self._successors:
            found.append(self._successors[key])
        return found + list(self._draining.get(key, ()))

    def everyone(self) -> list[WorkerActor]:
        """Every actor of every plugin, in every role, by plugin key."""
        keys = sorted({*self._actors, *self._successors, *self._draining})
        return [actor for key in keys for actor in self.actors_of(key)]

    def role(self, actor: WorkerActor) -> Role | None:
        key = actor.key
        if self._actors.get(key) is actor:
            return Role.ROUTED
        if self._successors.get(key) is actor:
            return Role.SUCCESSOR
        if any(a is actor for a in self._draining.get(key, ())):
            return Role.DRAINING
        return None

    def successor(self, key: str) -> WorkerActor | None:
        return self._successors.get(key)

    # --- the supervisor's side -------------------------------------------------------------

    def add(self, actor: WorkerActor) -> None:
        """`actor` becomes the plugin's routed actor (it has none)."""
        if actor.key in self._actors:
            raise ValueError(f"plugin {actor.key!r} already has an actor")
        self._forbid_known(actor)
        self._actors[actor.key] = actor

    def add_successor(self, actor: WorkerActor) -> None:
        """`actor` starts beside the plugin's routed actor, taking no calls until promoted."""
        if actor.key in self._successors:
            raise ValueError(f"plugin {actor.key!r} already has a successor starting")
        self._forbid_known(actor)
        self._successors[actor.key] = actor

    def promote(self, actor: WorkerActor) -> WorkerActor | None:
        """The successor becomes routed; the actor it replaces (returned) becomes draining."""
        if self._successors.get(actor.key) is not actor:
            raise ValueError(f"this actor is not the successor of plugin {actor.key!r}")
        del self._successors[actor.key]
        previous = self._actors.get(actor.key)
        self._actors[actor.key] = actor
        if previous is not None:
            self._draining.setdefault(actor.key, []).append(previous)
        return previous

    def drop(self, actor: WorkerActor) -> Role | None:
        """Forget `actor`, whatever its role (the role it had, or None if unknown)."""
        role = self.role(actor)
        key = actor.key
        match role:
            case Role.ROUTED:
                del self._actors[key]
            case Role.SUCCESSOR:
                del self._successors[key]
            case Role.DRAINING:
                rest = [a for a in self._draining[key] if a is not actor]
                if rest:
                    self._draining[key] = rest
                else:
                    del self._draining[key]
        return role

    def remove(self, key: str) -> WorkerActor | None:
        """Forget the plugin's routed actor (returned); other roles stay."""
        return self._actors.pop(key, None)

    def _forbid_known(self, actor: WorkerActor) -> None:
        if self.role(actor) is not None:
            raise ValueError(f"this actor of plugin {actor.key!r} is in the directory already")
