"""What the console's pages show, read from the same places the JSON API reads.

Each function returns plain data for one page or fragment. Whatever the API also answers is
taken from the API's own builders (`routes_plugins.plugin_view`, `run_summary`,
`routes_egress.egress_view`, `observe.readiness`, `observe.bench`), so a page never shows
something the API would say differently. Reads are the store's inline reads and the
supervisor's memory; nothing here writes.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

import trio

from ...packages.pipeline import Stage
from ...plugin_config import DEFAULT_SCHEMA
from ...security.operators import PROPERTY_SCOPED
from ...store import records
from ...supervisor.stats import tier
from ..routes_egress import egress_view
from ..routes_plugins import plugin_view, run_summary
from . import charts, forms
from .badges import state_class

if TYPE_CHECKING:
    from ..app import Services

PIPELINE = (
    Stage.UPLOADED,
    Stage.VALIDATING,
    Stage.DEPENDENCIES_PENDING,
    Stage.INSTALLING,
    Stage.TESTING,
    Stage.INSTALLED,
    Stage.VERIFIED,
)
RESTART_PHASES = {"RESTARTING", "BACKOFF"}
TIMELINE = 60
HEALTH_POINTS = 120
RUNS_SHOWN = 10


def _health(result: Any) -> dict[str, Any] | None:
    if result is None:
        return None
    return {
        "ok": bool(result.ok),
        "at": result.at,
        "latency_ms": result.latency_ms,
        "error": result.error,
    }


def _performance(services: Services, key: str) -> dict[str, Any]:
    actor = services.supervisor.directory.get(key)
    if actor is None:
        return {"calls": 0, "p50_ms": None, "p95_ms": None, "p99_ms": None, "tier": None}
    bench = services.config.bench
    summary = actor.stats.summary(trio.current_time(), bench.window_s)
    error_rate = summary["error_rate"] or 0.0
    return {**summary, "tier": tier(summary["p95_ms"], error_rate, bench)}


def plugin_row(services: Services, row: records.PluginRow, properties: list[str]) -> dict[str, Any]:
    """One line of the plugins table: the API's list entry, and its health, tier, properties
    (with what the template would otherwise work out per row)."""
    summary = services.registry.summary(row, records.egress_grants(services.db, row.key))
    actor = services.supervisor.directory.get(row.key)
    reason = summary["reason"] or ""
    return {
        **summary,
        "state_class": state_class(summary["state"]),
        "worker_class": state_class(summary["worker_state"]),
        "reason_shown": "" if reason.lower() == str(summary["state"]).lower() else reason[:80],
        "health": _health(actor.last_health) if actor else None,
        "tier": _performance(services, row.key)["tier"],
        "properties": ", ".join(properties),
    }


def plugin_rows(services: Services) -> list[dict[str, Any]]:
    assigned = records.all_assignments(services.db)
    return [
        plugin_row(services, row, assigned.get(row.key, []))
        for row in records.list_plugins(services.db)
    ]


def one_row(services: Services, key: str) -> dict[str, Any] | None:
    row = records.get_plugin(services.db, key)
    if row is None:
        return None
    return plugin_row(services, row, records.assigned_properties(services.db, key))


def visible_properties(services: Services, op: records.OperatorRow) -> list[records.PropertyRow]:
    only = sorted(op.properties) if op.role in PROPERTY_SCOPED else None
    return records.list_properties(services.db, only=only)


def _latest(
    events: Iterable[records.EventRow], types: set[str], phases: set[str] | None = None
) -> records.EventRow | None:
    for event in events:
        if event.type in types and (phases is None or event.state in phases):
            return event
    return None


def overview(services: Services, key: str) -> dict[str, Any]:
    """The plugin's detail (the API's), its last restart and quarantine with their evidence,
    and the install waiting for approval or under way."""
    detail = plugin_view(services, key)
    events = records.list_events(services.db, key, TIMELINE)
    quarantine = _latest(events, {"quarantined"})
    restart = _latest(events, {"state_changed"}, RESTART_PHASES)
    install = detail.get("upgrade") or detail.get("install") or {}
    return {
        "detail": detail,
        "last_quarantine": quarantine,
        "last_restart": restart,
        "install": install,
        "pending": install.get("pending_approval"),
        "evidence": (quarantine.detail.get("evidence") if quarantine else None) or {},
    }


def latest_install(services: Services, key: str, detail: dict[str, Any]) -> dict[str, Any]:
    """The install view of the package uploaded last (an upgrade under way, one that failed
    beside the active version, or the active one)."""
    rows = records.installs_of(services.db, key)
    views = [detail.get(name) for name in ("upgrade", "last_upgrade", "install")]
    if rows:
        for view in views:
            if view and view.get("id") == rows[-1].id:
                return dict(view)
    return dict(detail.get("upgrade") or detail.get("install") or {})


def pipeline(services: Services, key: str) -> dict[str, Any]:
    """The latest install's way through the pipeline, state by state, from its events."""
    detail = plugin_view(services, key)
    install = latest_install(services, key, detail)
    install_id = install.get("id")
    reached: list[dict[str, Any]] = []
    for event in reversed(records.list_events(services.db, key, 200)):
        if event.type == "install_state" and event.detail.get("install") == install_id:
            reached.append({"state": event.state, "at": event.at, "reason": event.reason})
    current = install.get("state", "")
    seen = {r["state"] for r in reached} | {Stage.UPLOADED.value}
    steps = []
    for stage in PIPELINE:
        if stage is Stage.DEPENDENCIES_PENDING and stage.value not in seen and current != stage:
            continue  # only packages that need approval pass through it
        status = "done" if stage.value in seen else "todo"
        if stage.value == current:
            status = "current"
        steps.append({"state": stage.value, "status": status})
    return {
        "detail": detail,
        "install": install,
        "state": current,
        "reason": install.get("reason", ""),
        "step": install.get("step"),
        "steps": steps,
        "reached": reached,
        "failed": current == Stage.REJECTED.value,
        "pending": install.get("pending_approval"),
        "wizard": bool(((detail.get("manifest") or {}).get("ui") or {}).get("wizard")),
    }


def approval(services: Services, key: str) -> dict[str, Any] | None:
    """What the approval modal shows, or None when nothing waits for approval."""
    detail = plugin_view(services, key)
    install = detail.get("upgrade") or detail.get("install") or {}
    pending = install.get("pending_approval")
    if not pending:
        return None
    manifest = records.get_plugin(services.db, key)
    domains: list[str] = []
    if manifest is not None and manifest.manifest is not None:
        domains = list(manifest.manifest.allowed_domains)
    for row in records.installs_of(services.db, key):
        if row.id == install.get("id"):
            domains = list(row.manifest.allowed_domains)
    return {
        "key": key,
        "name": detail.get("name", key),
        "version": install.get("version", ""),
        "pending": pending,
        "rating": install.get("security_rating"),
        "domains": domains,
    }


def timeline(services: Services, key: str) -> list[records.EventRow]:
    return records.list_events(services.db, key, TIMELINE)


def tests(services: Services, key: str) -> list[dict[str, Any]]:
    return [run_summary(r) for r in records.test_runs(services.db, key, RUNS_SHOWN)]


def performance(services: Services, key: str) -> dict[str, Any]:
    """The health history and latency charts, and the figures beside them."""
    checks = records.list_health(services.db, key, HEALTH_POINTS)
    points = [charts.HealthPoint(c.checked_at, c.ok, c.latency_ms) for c in checks]
    perf = _performance(services, key)
    bench = services.config.bench
    limits = [
        charts.Limit("platinum", bench.platinum_p95_ms),
        charts.Limit("gold", bench.gold_p95_ms),
        charts.Limit("silver", bench.silver_p95_ms),
    ]
    latency = [("p50", perf["p50_ms"]), ("p95", perf["p95_ms"]), ("p99", perf["p99_ms"])]
    return {
        "health_svg": charts.health_chart(points, label=f"health-{key}"),
        "latency_svg": charts.latency_chart(latency, limits, label=f"latency-{key}"),
        "checks": checks[:10],
        "failed": sum(1 for c in checks if not c.ok),
        "count": len(checks),
        "perf": perf,
        "window_s": bench.window_s,
    }


def configuration(services: Services, key: str) -> dict[str, Any]:
    row = services.registry.plugin(key)
    schema = row.manifest.config_schema if row.manifest is not None else DEFAULT_SCHEMA
    config = records.get_config(services.db, key)
    wizard = bool(row.manifest is not None and row.manifest.ui.get("wizard"))
    return {
        "schema": schema,
        "config": config,
        "fields": forms.config_fields(schema, config),
        "wizard": wizard,
    }


def plugin_page(services: Services, key: str, op: records.OperatorRow) -> dict[str, Any]:
    """Everything the plugin page shows at first (sections refresh on their own later)."""
    view = overview(services, key)
    detail = view["detail"]
    manifest = detail.get("manifest") or {}
    return {
        **view,
        "key": key,
        "timeline": timeline(services, key),
        "tests": tests(services, key),
        "performance": performance(services, key),
        "configuration": configuration(services, key),
        "egress": egress_view(services, key),
        "properties": visible_properties(services, op),
        "handlers": list(manifest.get("handlers") or []),
    }


def test_run(services: Services, key: str, run_id: str) -> records.TestRunRow | None:
    run = records.test_run(services.db, run_id)
    return run if run is not None and run.plugin_key == key else None
