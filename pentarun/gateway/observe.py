"""What operators watch: readiness, per-plugin performance (the bench), Prometheus metrics.

Everything here reads memory or a bounded amount of the store (a probe query, one row per
running plugin, one aggregate row per plugin state): it runs on the trio thread.
"""

from __future__ import annotations

import sqlite3
import time
from typing import TYPE_CHECKING, Any

import trio

from ..store import records
from ..supervisor.stats import tier

if TYPE_CHECKING:
    from .app import Services


def readiness(services: Services) -> tuple[bool, dict[str, dict[str, Any]]]:
    """Ready when the runtime finished starting and every check is ok; the checks by name.

    store: the database answers a query; supervisor: workers by phase; listeners: the plugin
    ports bound (name -> URL); sandbox: whether workers can be sandboxed (with
    `security.sandbox = "off"` it is ok, as the operator chose, and says so in `warning`).
    """
    checks: dict[str, dict[str, Any]] = {}
    try:
        services.db.read_one("SELECT 1")
        checks["store"] = {"ok": True}
    except sqlite3.Error as exc:
        checks["store"] = {"ok": False, "error": str(exc)}
    phases: dict[str, int] = {}
    for actor in services.supervisor.directory:
        phases[actor.phase.value] = phases.get(actor.phase.value, 0) + 1
    checks["supervisor"] = {
        "ok": services.ready.is_set(),
        "workers": len(services.supervisor.directory),
        "phases": phases,
    }
    checks["listeners"] = {"ok": True, "open": dict(services.listeners)}
    checks["sandbox"] = services.sandbox.status.report()
    ready = services.ready.is_set() and all(check["ok"] for check in checks.values())
    return ready, checks


def bench(services: Services) -> list[dict[str, Any]]:
    """Per running plugin: latency percentiles, error rate, throughput, CPU, memory, tier."""
    now = trio.current_time()
    window = services.config.bench.window_s
    out = []
    for actor in services.supervisor.directory:
        key = actor.key
        row = records.get_plugin(services.db, key)
        summary = actor.stats.summary(now, window)
        error_rate = summary["error_rate"] or 0.0
        out.append(
            {
                "plugin": key,
                "version": row.version if row else None,
                "state": row.state if row else None,
                "worker_state": actor.phase.value,
                "pid": actor.pid,
                "restarts": actor.state.restarts,
                "window_s": window,
                **summary,
                **actor.usage(),
                "calls_total": actor.stats.total,
                "failed_total": actor.stats.failed,
                "tier": tier(summary["p95_ms"], error_rate, services.config.bench),
            }
        )
    return out


def _line(name: str, value: float | None, **labels: str) -> str:
    if value is None:
        return ""
    text = ",".join(f'{k}="{v}"' for k, v in labels.items())
    return f"{name}{{{text}}} {value}\n" if text else f"{name} {value}\n"


def metrics(services: Services) -> str:
    """Prometheus text exposition format (version 0.0.4)."""
    out = [
        "# HELP pentarun_up The server is running.\n# TYPE pentarun_up gauge\n",
        _line("pentarun_up", 1),
        "# TYPE pentarun_uptime_seconds gauge\n",
        _line("pentarun_uptime_seconds", round(time.time() - services.started_at, 3)),
        "# HELP pentarun_plugins Plugins by state.\n# TYPE pentarun_plugins gauge\n",
    ]
    states = records.plugin_state_counts(services.db)
    out += [_line("pentarun_plugins", n, state=state) for state, n in sorted(states.items())]
    out.append("# TYPE pentarun_feed_subscribers gauge\n")
    out.append(_line("pentarun_feed_subscribers", services.feed.subscribers))
    families = {
        "pentarun_worker_up": ("gauge", "1 while the worker is RUNNING"),
        "pentarun_worker_restarts_total": ("counter", "restarts of the worker"),
        "pentarun_plugin_calls_total": ("counter", "calls to the plugin"),
        "pentarun_plugin_call_failures_total": ("counter", "calls that failed (5xx, timeouts)"),
        "pentarun_plugin_call_latency_seconds": ("summary", "call latency over the bench window"),
        "pentarun_worker_cpu_seconds_total": ("counter", "CPU time of the worker process"),
        "pentarun_worker_memory_bytes": ("gauge", "resident memory of the worker process"),
    }
    rows = {name: "" for name in families}
    for entry in bench(services):
        plugin = entry["plugin"]
        rows["pentarun_worker_up"] += _line(
            "pentarun_worker_up", int(entry["worker_state"] == "RUNNING"), plugin=plugin
        )
        rows["pentarun_worker_restarts_total"] += _line(
            "pentarun_worker_restarts_total", entry["restarts"], plugin=plugin
        )
        rows["pentarun_plugin_calls_total"] += _line(
            "pentarun_plugin_calls_total", entry["calls_total"], plugin=plugin
        )
        rows["pentarun_plugin_call_failures_total"] += _line(
            "pentarun_plugin_call_failures_total", entry["failed_total"], plugin=plugin
        )
        for q, field in (("0.5", "p50_ms"), ("0.95", "p95_ms"), ("0.99", "p99_ms")):
            value = entry[field]
            rows["pentarun_plugin_call_latency_seconds"] += _line(
                "pentarun_plugin_call_latency_seconds",
                None if value is None else value / 1000,
                plugin=plugin,
                quantile=q,
            )
        rows["pentarun_worker_cpu_seconds_total"] += _line(
            "pentarun_worker_cpu_seconds_total", entry["cpu_seconds"], plugin=plugin
        )
        memory = entry["memory_mb"]
        rows["pentarun_worker_memory_bytes"] += _line(
            "pentarun_worker_memory_bytes",
            None if memory is None else int(memory * 2**20),
            plugin=plugin,
        )
    for name, (kind, text) in families.items():
        out.append(f"# HELP {name} {text}.\n# TYPE {name} {kind}\n{rows[name]}")
    return "".join(out)
