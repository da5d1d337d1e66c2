"""Plugin -> plugin calls through the core beside a direct core -> plugin call (issue 10).

- direct: the core calls the bench plugin's `echo` (actor.call), sequentially, `--calls` times;
- through the core: the relay plugin calls the same `echo` with `ctx.plugins.call`, timed inside
  the relay's worker (worker -> core: token, scope, dependency and property checks, audit ->
  bench worker -> core -> relay worker), the same number of times;
both against the same running bench worker, in the same run, sandboxed when run as root (as
the server runs them), unsandboxed otherwise. Aim: through the core at most 2x direct.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path

import msgspec
import trio
from ipc_roundtrip import BENCH_MANIFEST, PLUGIN, percentile

from pentarun.assembly import assemble
from pentarun.config import SecurityConfig, SupervisorConfig
from pentarun.packages.manifest import Manifest
from pentarun.sandbox.launcher import Sandbox
from pentarun.store import records
from pentarun.store.db import open_database
from pentarun.supervisor.policy import Phase
from pentarun.supervisor.process import WorkerSpec

RELAY = Path(__file__).parent / "plugins" / "relay"


def relay_manifest() -> Manifest:
    raw = json.loads((RELAY / "definition.json").read_text())
    return msgspec.structs.replace(
        BENCH_MANIFEST,
        key="relay",
        name="relay",
        scopes=raw["scopes"],
        handlers=raw["handlers"],
        dependencies=raw["dependencies"],
    )


async def measure(calls: int, sandboxed: bool) -> tuple[list[float], list[float]]:
    with tempfile.TemporaryDirectory() as tmp:
        sandbox = Sandbox(SecurityConfig(), Path(tmp)) if sandboxed else None
        if sandbox is not None and not (await trio.to_thread.run_sync(sandbox.check)).ok:
            raise SystemExit(f"the sandbox is unavailable: {sandbox.status.reason}")
        async with open_database(Path(tmp) / "b.db") as db, trio.open_nursery() as nursery:
            supervisor = assemble(SupervisorConfig(), db, sandbox=sandbox).supervisor
            await nursery.start(supervisor.run)
            await records.create_property(db, "p1", "p1")
            actors = []
            for key, root, manifest in (
                ("bench", PLUGIN, BENCH_MANIFEST),
                ("relay", RELAY, relay_manifest()),
            ):
                await records.upsert_plugin(db, key, name=key, version="1.0.0", state="ENABLED")
                await records.assign_property(db, key, "p1")
                actor = await supervisor.add(WorkerSpec(key, root), manifest)
                actor.start()
                actors.append(actor)
            bench, relay = actors
            for actor in actors:
                await actor.wait_for(Phase.RUNNING)
            await relay.call("relay.loop", "p1", {"n": 100}, 60)  # warm both paths
            for _ in range(100):
                await bench.call("echo", "p1", {"n": 1})
            direct = []
            for _ in range(calls):
                start = trio.current_time()
                await bench.call("echo", "p1", {"n": 1})
                direct.append(trio.current_time() - start)
            reply = await relay.call("relay.loop", "p1", {"n": calls}, 600)
            through = list(reply.value["samples"])  # type: ignore[union-attr]
            await supervisor.stop_all(5)
            nursery.cancel_scope.cancel()
    return direct, through


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--calls", type=int, default=3000)
    args = parser.parse_args()
    sandboxed = os.geteuid() == 0
    direct, through = trio.run(measure, args.calls, sandboxed)
    where = "sandboxed" if sandboxed else "unsandboxed"
    print(f"python {sys.version.split()[0]}, {os.cpu_count()} cpus, {args.calls} calls, {where}")
    print("| call (sequential) | p50 µs | p99 µs |")
    print("|---|---|---|")
    for name, samples in (
        ("core -> plugin (direct)", direct),
        ("plugin -> core -> plugin", through),
    ):
        p50, p99 = percentile(samples, 0.5) * 1e6, percentile(samples, 0.99) * 1e6
        print(f"| {name} | {p50:.0f} | {p99:.0f} |")
    ratio = percentile(through, 0.5) / percentile(direct, 0.5)
    print(f"through the core: {ratio:.2f}x the direct call at p50 (aim: at most 2x)")


if __name__ == "__main__":
    main()
