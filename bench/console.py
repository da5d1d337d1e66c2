"""Console pages beside the JSON API answering the same data, with 100 plugins installed.

    .venv/bin/python bench/console.py [--plugins 100] [--rounds 200]

One admin app (the real one: store, supervisor, install service, registry, console) on a
fresh SQLite file holding `--plugins` installed plugins as the pipeline leaves them: an active
ENABLED install each, assigned properties, 40 lifecycle events, 120 health checks, 3 test runs
with full five-gate reports, a configuration. Requests go through quart's in-process test
client (no sockets: what is timed is the server's work, routing, auth, reads, rendering), the
console signed in with its session cookie, the API with the bearer token. Requests of both
kinds are interleaved, so both see the same machine; medians and p95 over `--rounds`.

- plugins page `GET /` beside `GET /api/plugins` (the list, every plugin in one page)
- plugin page `GET /plugins/<key>` beside the API requests that answer what it shows:
  detail, events, health, test runs, configuration, egress (timed together, one after the
  other), and beside the detail alone.
"""

from __future__ import annotations

import argparse
import os
import platform
import re
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import msgspec
import trio

from pentarun.assembly import assemble
from pentarun.config import SecurityConfig, load_config
from pentarun.gateway.app import Services, create_admin_app
from pentarun.lanes.feed import Feed
from pentarun.packages.manifest import Manifest
from pentarun.packages.pipeline import Job, Stage
from pentarun.packages.service import Installs
from pentarun.packages.workers import NoPorts
from pentarun.registry import Registry
from pentarun.sandbox.launcher import Sandbox
from pentarun.security.operators import ensure_root
from pentarun.store import records
from pentarun.store.db import open_database

GATES = ("self", "integration", "security", "load", "recovery")


def manifest(key: str) -> Manifest:
    return msgspec.convert(
        {
            "key": key,
            "name": f"Plugin {key}",
            "version": "1.2.3",
            "engine": ">=0.1,<1",
            "traits": ["example"],
            "scopes": ["properties:read", "cameras:read", "streams:read"],
            "handlers": ["a.list", "a.get", "a.snapshot"],
            "security": {"authentication_required": True, "data_classification": ["internal"]},
            "config_schema": {
                "type": "object",
                "properties": {
                    "host": {"type": "string"},
                    "port": {"type": "integer", "minimum": 1, "maximum": 65535},
                    "on": {"type": "boolean"},
                    "zones": {"type": "array", "items": {"type": "string"}},
                },
            },
        },
        Manifest,
    )


def report(now: float) -> dict[str, Any]:
    cases = [{"name": f"case {i}", "ok": True, "detail": "", "duration_ms": 1.5} for i in range(4)]
    gates = [{"gate": g, "ok": True, "cases": cases, "detail": "", "stats": {}} for g in GATES]
    return {"ok": True, "gates": gates, "started_at": now, "finished_at": now + 1}


async def populate(services: Services, plugins: int) -> None:
    db = services.db
    for pid in ("p1", "p2", "p3"):
        await records.create_property(db, pid, pid.upper())
    job = msgspec.to_builtins(Job(stage=Stage.ENABLED, reason="enabled"))
    now = time.time()
    for n in range(plugins):
        key = f"bench-{n:03d}"
        m = manifest(key)
        install_id = f"install{n:03d}"
        await records.create_install(
            db,
            install_id,
            plugin_key=key,
            version=m.version,
            job=job,
            package_digest="ab" * 32,
            manifest=m,
            file_hashes={},
        )
        await records.activate_install(db, key, install_id)
        await records.upsert_plugin(
            db, key, name=m.name, version=m.version, state="ENABLED", reason="enabled", manifest=m
        )
        for pid in ("p1", "p2")[: 1 + n % 2]:
            await records.assign_property(db, key, pid)
        await records.set_config(db, key, {"host": "cam.lan", "port": 554, "on": True})
        for i in range(40):
            records.record_event(db, key, "state_changed", state="RUNNING", reason=f"event {i}")
        for i in range(120):
            records.record_health(db, key, i % 17 != 0, 1.0 + i % 5, {})
        for i in range(3):
            run_id = f"{key}-run{i}"
            await records.start_test_run(db, run_id, key, m.version)
            await records.finish_test_run(db, run_id, "passed", report(now))
    await db.flush()


Request = Callable[[], Awaitable[None]]


async def timed(request: Request) -> float:
    start = time.perf_counter()
    await request()
    return time.perf_counter() - start


def summary(samples: list[float]) -> tuple[float, float]:
    ordered = sorted(samples)
    return statistics.median(ordered) * 1000, ordered[int(0.95 * (len(ordered) - 1))] * 1000


async def run(plugins: int, rounds: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp)
        config = load_config(environ={})
        async with open_database(path / "pentarun.db") as db, trio.open_nursery() as nursery:
            token_file = await ensure_root(db, path)
            assert token_file is not None
            token = token_file.read_text().strip()
            platform_parts = assemble(config.supervisor, db)
            await nursery.start(platform_parts.supervisor.run)
            installs = Installs(config, path, db, platform_parts.supervisor, NoPorts())
            await nursery.start(installs.run)
            services = Services(
                config,
                path,
                db,
                platform_parts.supervisor,
                platform_parts.events,
                Registry(db, platform_parts.supervisor, installs),
                installs,
                Feed(),
                Sandbox(SecurityConfig(sandbox="off"), path),
            )
            print(f"populating {plugins} plugins ...", flush=True)
            await populate(services, plugins)
            app = create_admin_app(services)
            api = app.test_client()
            page = app.test_client()
            bearer = {"Authorization": f"Bearer {token}"}
            signed = await page.post("/signin", form={"token": token})
            assert signed.status_code == 303, signed.status_code
            key = f"bench-{plugins // 2:03d}"

            async def get(client: Any, url: str, headers: dict[str, str] | None = None) -> None:
                response = await client.get(url, headers=headers or {})
                await response.get_data()
                assert response.status_code == 200, (url, response.status_code)

            async def plugins_page() -> None:
                await get(page, "/")

            async def plugins_api() -> None:
                await get(api, "/api/plugins?limit=1000", bearer)

            async def plugin_page() -> None:
                await get(page, f"/plugins/{key}")

            async def plugin_api_detail() -> None:
                await get(api, f"/api/plugins/{key}", bearer)

            async def plugin_api_all() -> None:
                for suffix in ("", "/events", "/health", "/tests", "/config", "/egress"):
                    await get(api, f"/api/plugins/{key}{suffix}", bearer)

            cases = {
                "plugins page": plugins_page,
                "plugins API": plugins_api,
                "plugin page": plugin_page,
                "plugin API, detail": plugin_api_detail,
                "plugin API, same data (6 requests)": plugin_api_all,
            }
            html = await (await page.get("/")).get_data(as_text=True)
            rows = len(re.findall(r'data-plugin-row="', html))
            assert rows == plugins, rows
            for request in cases.values():  # warm up: templates compiled, caches filled
                for _ in range(10):
                    await request()
            samples: dict[str, list[float]] = {name: [] for name in cases}
            for _ in range(rounds):
                for name, request in cases.items():
                    samples[name].append(await timed(request))
            nursery.cancel_scope.cancel()
    figures = {name: summary(values) for name, values in samples.items()}
    print(f"\n{plugins} plugins, {rounds} rounds, {machine()}\n")
    print(f"| {'request':38} | {'median ms':>9} | {'p95 ms':>7} |")
    print(f"|{'-' * 40}|{'-' * 11}|{'-' * 9}|")
    for name, (median, p95) in figures.items():
        print(f"| {name:38} | {median:9.2f} | {p95:7.2f} |")
    page_list, api_list = figures["plugins page"][0], figures["plugins API"][0]
    page_one = figures["plugin page"][0]
    api_detail = figures["plugin API, detail"][0]
    api_all = figures["plugin API, same data (6 requests)"][0]
    print(
        f"\nplugins page / plugins API:          {page_list / api_list:.2f}x (aim <= 2x)\n"
        f"plugin page / API, same data:        {page_one / api_all:.2f}x (aim <= 2x)\n"
        f"plugin page / API detail alone:      {page_one / api_detail:.2f}x"
    )


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{os.cpu_count()} vCPU {cpu}, Python {platform.python_version()}"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--plugins", type=int, default=100)
    parser.add_argument("--rounds", type=int, default=200)
    args = parser.parse_args()
    trio.run(run, args.plugins, args.rounds)
    return 0


if __name__ == "__main__":
    sys.exit(main())
