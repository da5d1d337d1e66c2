"""The event lane: canonical events (`camera.motion`, `recording.created`, ...) of a property,
published by the platform (admin API) or by plugins, delivered to subscribing plugins.

A plugin receives an event when its manifest subscribes to the type, it is running, and it is
assigned to the event's property. Delivery is bounded per subscriber (see the actor's
`deliver`): a plugin that does not keep up loses events, never slows the publisher. A plugin
publishes only the types its manifest declares under `events.publish`.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from ..errors import BadRequest, Forbidden
from .request import CoreRequest

if TYPE_CHECKING:
    from ..supervisor.supervisor import Supervisor

EVENT_TYPE = re.compile(r"^[a-z][a-z0-9_]*(\.[a-z][a-z0-9_]*)+$")
MAX_DATA = 64 * 1024


class EventLane:
    def __init__(self, supervisor: Supervisor) -> None:
        self.supervisor = supervisor
        self.on_published: Callable[[dict[str, Any]], None] = lambda event: None

    def _declared(self, key: str, direction: str) -> list[str]:
        actor = self.supervisor.directory.get(key)
        events = actor.manifest.get("events", {}) if actor else {}
        return list(events.get(direction, [])) if isinstance(events, dict) else []

    def publish(self, event_type: str, property_id: str, data: dict[str, Any], source: str) -> int:
        """Deliver to every subscriber of this property; returns how many took it."""
        if not EVENT_TYPE.match(event_type):
            raise BadRequest("event types look like 'camera.motion'", {"type": event_type})
        delivered = 0
        for actor in self.supervisor.directory.serving(property_id):
            key = actor.key
            if source == f"plugin:{key}":
                continue
            if event_type in self._declared(key, "subscribe"):
                delivered += actor.deliver(event_type, property_id, data)
        self.on_published(
            {
                "type": f"event.{event_type}",
                "property": property_id,
                "source": source,
                "data": data,
                "delivered": delivered,
                "at": time.time(),
            }
        )
        return delivered

    async def core_publish(self, r: CoreRequest) -> int:
        """The `events.publish` core call (scope events:publish is checked by the core)."""
        event_type = r.params.get("type")
        data = r.params.get("data") or {}
        if not isinstance(event_type, str) or not isinstance(data, dict):
            raise BadRequest("events.publish takes a type and a data object")
        if event_type not in self._declared(r.plugin, "publish"):
            raise Forbidden(
                f"{r.plugin!r} does not declare publishing {event_type!r}", {"type": event_type}
            )
        return self.publish(event_type, r.property, data, source=f"plugin:{r.plugin}")
