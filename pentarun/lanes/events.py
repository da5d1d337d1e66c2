"""The event lane: canonical events (`camera.motion`, `recording.created`, ...) of a property,
published by the platform (admin API) or by plugins, delivered to subscribing plugins.

A plugin receives an event when its manifest subscribes to the type, it is running, and it is
assigned to the event's property. Delivery is bounded per subscriber (see the actor's
`deliver`): a plugin that does not keep up loses events, never slows the publisher. A plugin
publishes only the types its manifest declares under `events.publish`.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from ..errors import BadRequest, Forbidden
from ..supervisor.directory import Directory
from .calls import EVENT_TYPE, EventsPublishParams, clip
from .request import CoreRequest


def _ignore(event: dict[str, Any]) -> None:
    return None


class EventLane:
    def __init__(
        self, directory: Directory, on_published: Callable[[dict[str, Any]], None] = _ignore
    ) -> None:
        """`on_published` sees every event published (the live feed mirrors them)."""
        self.directory = directory
        self.on_published = on_published

    def _declared(self, key: str, direction: str) -> list[str]:
        actor = self.directory.get(key)
        if actor is None:
            return []
        return list(getattr(actor.manifest.events, direction))

    def publish(self, event_type: str, property_id: str, data: dict[str, Any], source: str) -> int:
        """Deliver to every subscriber of this property; returns how many took it."""
        if not EVENT_TYPE.fullmatch(event_type):
            raise BadRequest("event types look like 'camera.motion'", {"type": clip(event_type)})
        delivered = 0
        for actor in self.directory.serving(property_id):
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

    async def core_publish(self, r: CoreRequest, p: EventsPublishParams) -> int:
        """The `events.publish` core call (scope events:publish is checked by the core; the
        type must be one the plugin's manifest declares under `events.publish`)."""
        if p.event_type not in self._declared(r.plugin, "publish"):
            raise r.refuse(
                Forbidden(
                    f"{r.plugin!r} does not declare publishing {p.event_type!r}",
                    {"type": p.event_type},
                )
            )
        return self.publish(p.event_type, r.property, p.data, source=f"plugin:{r.plugin}")
