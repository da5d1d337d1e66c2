"""The operator API lane: plugin -> plugin calls, only through the core (SPEC §7).

    lane = PluginCalls(db, directory, call_timeout_s)
    core.register("plugins.call", "plugins:call", lane.handle)

A plugin calls another with `await ctx.plugins.call(key, handler, **params)`. The core has
already checked the caller's token, property and scope `plugins:call` (lanes/core.py); here,
in this order:
  1. the callee is one of the caller's manifest `dependencies` (403 not_a_dependency);
  2. the callee is enabled for the call's property: it runs for the same property, never
     another (403 property_not_assigned);
  3. the callee is installed, not quarantined (503 plugin_quarantined, at once: a
     quarantined plugin is not coming back by itself) and has a worker (503
     worker_unavailable);
  4. the callee declares the handler (404 unknown_handler);
then the callee's actor runs it as any call — waiting out a restart, retried when the
handler is idempotent — within the caller's remaining deadline (`deadline_ms`, which the SDK
takes from the caller's own call; capped at `call_timeout_s`). The callee's answer (or its
own error, code and status kept) goes back to the caller; a streamed answer cannot cross
(502 bad_plugin_reply). Refusals 1 and 2 are audited as core-call refusals (with the risk of
scope plugins:call); every call that reached the callee is audited `plugin.call` (caller,
callee, handler, property, outcome, milliseconds) and counted in both plugins' stats: the
callee's calls, the caller's `calls_out`.
"""

from __future__ import annotations

import trio

from ..errors import (
    BadPluginReply,
    NotADependency,
    NotFound,
    PentarunError,
    PluginQuarantined,
    PropertyNotAssigned,
    WorkerUnavailable,
)
from ..ipc.messages import Reply
from ..store import records
from ..store.db import Database
from ..supervisor.actor import WorkerActor
from ..supervisor.directory import Directory
from ..supervisor.policy import Phase
from .calls import PluginsCallParams, clip
from .request import CoreRequest

QUARANTINED = "QUARANTINED"  # the install pipeline's stage, as the plugin row stores it


class PluginCalls:
    def __init__(self, db: Database, directory: Directory, call_timeout_s: float) -> None:
        self.db = db
        self.directory = directory
        self.call_timeout_s = call_timeout_s

    async def handle(self, r: CoreRequest, p: PluginsCallParams) -> object:
        caller = self.directory.get(r.plugin)
        declared = caller.manifest.dependencies if caller is not None else {}
        if p.plugin not in declared:
            raise r.refuse(
                NotADependency(
                    f"plugin {r.plugin!r} may call only the plugins it depends on; "
                    f"{clip(p.plugin)!r} is not in its dependencies",
                    {"plugin": p.plugin, "dependencies": sorted(declared)},
                )
            )
        if r.property not in records.assigned_properties(self.db, p.plugin):
            raise r.refuse(
                PropertyNotAssigned(
                    f"plugin {p.plugin!r} is not enabled for property {r.property!r}",
                    {"plugin": p.plugin, "property": r.property},
                )
            )
        callee = self._callee(p.plugin)
        if p.handler not in callee.manifest.handlers:
            raise NotFound(
                f"plugin {p.plugin!r} has no handler {clip(p.handler)!r}",
                {"plugin": p.plugin, "handler": clip(p.handler)},
            )
        timeout = self.call_timeout_s
        if p.deadline_ms:
            timeout = min(timeout, p.deadline_ms / 1000)
        started = trio.current_time()
        outcome = "ok"
        try:
            reply = await callee.call(p.handler, r.property, p.params, timeout)
            if not isinstance(reply, Reply):
                raise BadPluginReply(
                    f"{p.plugin}.{p.handler} answered with a stream or an HTTP reply, which "
                    "a plugin call cannot carry",
                    {"plugin": p.plugin, "handler": p.handler},
                )
            return reply.value
        except PentarunError as exc:
            outcome = exc.error_code
            raise
        finally:
            took = trio.current_time() - started
            if caller is not None:
                caller.telemetry.outgoing.record(trio.current_time(), took, ok=outcome == "ok")
            records.audit(
                self.db,
                f"plugin:{r.plugin}",
                "plugin.call",
                plugin=r.plugin,
                property_id=r.property,
                detail={
                    "callee": p.plugin,
                    "handler": p.handler,
                    "outcome": outcome,
                    "ms": round(took * 1000, 2),
                },
            )

    def _callee(self, key: str) -> WorkerActor:
        """The callee's actor; its record is read only when the actor cannot serve (a
        quarantine stops the actor too, so a serving actor is never a quarantined plugin's)."""
        actor = self.directory.get(key)
        if actor is not None and actor.phase is not Phase.QUARANTINED:
            return actor
        row = records.get_plugin(self.db, key)
        if (row is not None and row.state == QUARANTINED) or actor is not None:
            why = row.reason if row is not None and row.reason else "see its detail"
            raise PluginQuarantined(f"plugin {key!r} is quarantined: {why}", {"plugin": key})
        state = row.state if row is not None else "not installed"
        raise WorkerUnavailable(f"plugin {key!r} has no worker ({state})", {"plugin": key})
