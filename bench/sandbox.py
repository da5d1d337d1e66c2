"""What the sandbox costs: start-to-ready and IPC of a sandboxed worker beside an unsandboxed one
and beside `python -c pass`, all measured in the same run (issue 8).

- start-to-ready: `actor.start()` until the worker's handshake completed (RUNNING), the echo
  plugin of bench/plugins/bench, median of `--starts` (the sandboxed start includes its
  cgroup, the seccomp filter, bubblewrap's namespaces and mounts, and setpriv);
- IPC: sequential round trips (p50, p99) and pipelined calls/s through a running worker.

Needs root (the per-plugin uid and cgroups), bubblewrap and util-linux's setpriv.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import msgspec
import trio
from ipc_roundtrip import BENCH_MANIFEST, PLUGIN, measure_calls

from pentarun.assembly import assemble
from pentarun.config import SecurityConfig, SupervisorConfig
from pentarun.packages.manifest import Resources
from pentarun.sandbox.launcher import Sandbox
from pentarun.store import records
from pentarun.store.db import open_database
from pentarun.supervisor.actor import WorkerActor
from pentarun.supervisor.policy import Phase
from pentarun.supervisor.process import WorkerSpec

# the echo plugin of bench/plugins/bench, with a CPU quota above the machine's cores: the
# sandbox itself is measured, not the quota (at the default cpu_limit of 0.5 a start's imports
# run at half speed)
MANIFEST = msgspec.structs.replace(
    BENCH_MANIFEST,
    resources=Resources(memory_limit=512, cpu_limit=float(os.cpu_count() or 1) + 1),
)


BATCH = 3  # starts of one kind in a row


def python_pass(rounds: int) -> float:
    samples = []
    for _ in range(rounds):
        start = time.perf_counter()
        subprocess.run([sys.executable, "-c", "pass"], check=True)
        samples.append(time.perf_counter() - start)
    return statistics.median(samples)


async def measure(sandboxed: bool, starts: int, calls: int, in_flight: int) -> dict[str, float]:
    """`starts` start-to-ready samples (`ready`, ms) and, with `calls`, the IPC figures."""
    with tempfile.TemporaryDirectory() as tmp:
        sandbox = None
        if sandboxed:
            sandbox = Sandbox(SecurityConfig(), Path(tmp))
            status = await trio.to_thread.run_sync(sandbox.check)
            if not status.ok:
                raise SystemExit(f"the sandbox is unavailable: {status.reason}")
        config = SupervisorConfig(max_in_flight=in_flight * 2)
        async with open_database(Path(tmp) / "b.db") as db, trio.open_nursery() as nursery:
            supervisor = assemble(config, db, sandbox=sandbox).supervisor
            await nursery.start(supervisor.run)
            await records.upsert_plugin(db, "bench", name="bench", version="1", state="ENABLED")
            await records.create_property(db, "p1", "p1")
            await records.assign_property(db, "bench", "p1")
            actor = await supervisor.add(WorkerSpec("bench", PLUGIN), MANIFEST)
            ready = []
            for _ in range(starts):
                start = time.perf_counter()
                actor.start()
                await actor.wait_for(Phase.RUNNING)
                ready.append(time.perf_counter() - start)
                actor.stop()
                await actor.wait_for(Phase.STOPPED)
            figures: dict[str, Any] = {"ready": [r * 1000 for r in ready]}
            if calls:
                actor.start()
                await actor.wait_for(Phase.RUNNING)
                figures.update(await _ipc(actor, calls, in_flight))
            await supervisor.stop_all(5)
            nursery.cancel_scope.cancel()
    return figures


async def _ipc(actor: WorkerActor, calls: int, in_flight: int) -> dict[str, float]:
    samples, throughput = await measure_calls(actor, calls, in_flight)
    samples.sort()
    return {
        "p50_us": samples[len(samples) // 2] * 1e6,
        "p99_us": samples[int(len(samples) * 0.99)] * 1e6,
        "calls_s": throughput,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--starts", type=int, default=15)
    parser.add_argument("--calls", type=int, default=3000)
    parser.add_argument("--in-flight", type=int, default=128)
    args = parser.parse_args()
    if os.geteuid() != 0:
        raise SystemExit("run as root: the sandbox gives each plugin its own uid and cgroup")
    bare = python_pass(args.starts) * 1000
    # interleaved in batches, so a burst of load elsewhere on the machine hits both alike
    plain: dict[str, Any] = {"ready": []}
    boxed: dict[str, Any] = {"ready": []}
    for batch in range(0, args.starts, BATCH):
        n = min(BATCH, args.starts - batch)
        for figures, sandboxed in ((plain, False), (boxed, True)):
            figures["ready"] += trio.run(measure, sandboxed, n, 0, 0)["ready"]
    for figures, sandboxed in ((plain, False), (boxed, True)):
        ipc = trio.run(measure, sandboxed, 1, args.calls, args.in_flight)
        figures.update({k: v for k, v in ipc.items() if k != "ready"})
        figures["ready_ms"] = statistics.median(figures["ready"])
    print(f"python {sys.version.split()[0]}, {os.cpu_count()} cpus, median of {args.starts} starts")
    print("| worker | start-to-ready ms | IPC p50 µs | IPC p99 µs | pipelined calls/s |")
    print("|---|---|---|---|---|")
    print(f"| `python -c pass` (process floor) | {bare:.0f} | | | |")
    for name, f in (("unsandboxed", plain), ("sandboxed", boxed)):
        print(
            f"| {name} | {f['ready_ms']:.0f} | {f['p50_us']:.0f} | {f['p99_us']:.0f} "
            f"| {f['calls_s']:,.0f} |"
        )
    added = boxed["ready_ms"] / plain["ready_ms"] - 1
    print(f"the sandbox adds {added:.0%} to start-to-ready (aim: at most 30%)")
    print(
        f"IPC through the sandbox: p50 {boxed['p50_us'] / plain['p50_us']:.2f}x, "
        f"throughput {boxed['calls_s'] / plain['calls_s']:.2f}x of unsandboxed (aim: equal)"
    )


if __name__ == "__main__":
    main()
