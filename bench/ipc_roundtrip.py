"""IPC round trip: real actor + real worker process, against a raw blocking pipe ping-pong.

Floor: two Python processes bouncing a small message over a pipe pair with blocking reads
and writes, no framing library, no trio. Second baseline: the same bounce between two trio
event loops over a socketpair (what the event loops alone cost, no framing, no actor).
Measured: p50/p99 of sequential calls through `WorkerActor.call` to a real worker, and
calls/s with many calls in flight.
"""

from __future__ import annotations

import argparse
import os
import socket
import statistics
import sys
import tempfile
import time
from pathlib import Path

import trio

from pentarun.assembly import assemble
from pentarun.config import SupervisorConfig
from pentarun.packages.manifest import Manifest, Security
from pentarun.store import records
from pentarun.store.db import open_database
from pentarun.supervisor.actor import WorkerActor
from pentarun.supervisor.policy import Phase
from pentarun.supervisor.process import WorkerSpec

PLUGIN = Path(__file__).parent / "plugins" / "bench"
BENCH_MANIFEST = Manifest(
    key="bench",
    name="bench",
    version="1.0.0",
    engine=">=0.1",
    traits=["benchmark"],
    security=Security(authentication_required=True, data_classification=["internal"]),
    handlers=["echo"],
)
MESSAGE = b'{"handler":"echo","property":"p1","params":{"n":1}}'


def percentile(samples: list[float], q: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def pipe_floor(count: int) -> list[float]:
    """Raw blocking ping-pong between this process and a forked child."""
    to_child_r, to_child_w = os.pipe()
    to_parent_r, to_parent_w = os.pipe()
    size = len(MESSAGE)
    pid = os.fork()
    if pid == 0:
        os.close(to_child_w)
        os.close(to_parent_r)
        while True:
            data = os.read(to_child_r, size)
            if not data:
                os._exit(0)
            os.write(to_parent_w, data)
    os.close(to_child_r)
    os.close(to_parent_w)
    samples = []
    for _ in range(count):
        start = time.perf_counter()
        os.write(to_child_w, MESSAGE)
        os.read(to_parent_r, size)
        samples.append(time.perf_counter() - start)
    os.close(to_child_w)
    os.waitpid(pid, 0)
    os.close(to_parent_r)
    return samples


def trio_floor(count: int) -> list[float]:
    """Bare ping-pong between two trio event loops (parent and a forked child)."""
    parent_sock, child_sock = socket.socketpair()
    size = len(MESSAGE)
    pid = os.fork()
    if pid == 0:
        parent_sock.close()

        async def echo() -> None:
            stream = trio.SocketStream(trio.socket.from_stdlib_socket(child_sock))
            while data := await stream.receive_some(size):
                await stream.send_all(data)

        trio.run(echo)
        os._exit(0)
    child_sock.close()

    async def bounce() -> list[float]:
        stream = trio.SocketStream(trio.socket.from_stdlib_socket(parent_sock))
        samples = []
        for _ in range(count):
            start = time.perf_counter()
            await stream.send_all(MESSAGE)
            await stream.receive_some(size)
            samples.append(time.perf_counter() - start)
        await stream.aclose()
        return samples

    samples = trio.run(bounce)
    os.waitpid(pid, 0)
    return samples


async def measure_calls(
    actor: WorkerActor, count: int, in_flight: int
) -> tuple[list[float], float]:
    """Sequential round trips of `echo` (seconds each), then pipelined calls/s."""
    params = {"n": 1}
    for _ in range(200):  # warm up
        await actor.call("echo", "p1", params)
    samples = []
    for _ in range(count):
        start = time.perf_counter()
        await actor.call("echo", "p1", params)
        samples.append(time.perf_counter() - start)
    per_task = count * 4 // in_flight

    async def caller() -> None:
        for _ in range(per_task):
            await actor.call("echo", "p1", params)

    start = time.perf_counter()
    async with trio.open_nursery() as callers:
        for _ in range(in_flight):
            callers.start_soon(caller)
    return samples, per_task * in_flight / (time.perf_counter() - start)


async def actor_bench(count: int, in_flight: int) -> tuple[list[float], float]:
    with tempfile.TemporaryDirectory() as tmp:
        async with open_database(Path(tmp) / "bench.db") as db, trio.open_nursery() as nursery:
            supervisor = assemble(SupervisorConfig(max_in_flight=in_flight * 2), db).supervisor
            await nursery.start(supervisor.run)
            await records.upsert_plugin(db, "bench", name="bench", version="1", state="ENABLED")
            await records.create_property(db, "p1", "p1")
            await records.assign_property(db, "bench", "p1")
            actor = await supervisor.add(WorkerSpec("bench", PLUGIN), BENCH_MANIFEST)
            actor.start()
            with trio.fail_after(20):
                await actor.wait_for(Phase.RUNNING)
            samples, throughput = await measure_calls(actor, count, in_flight)
            await supervisor.stop_all(5)
            nursery.cancel_scope.cancel()
    return samples, throughput


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--calls", type=int, default=5000)
    parser.add_argument("--in-flight", type=int, default=256)
    args = parser.parse_args()
    floor = pipe_floor(args.calls)
    loops = trio_floor(args.calls)
    samples, throughput = trio.run(actor_bench, args.calls, args.in_flight)
    print(f"python {sys.version.split()[0]}, {os.cpu_count()} cpus, {args.calls} sequential calls")
    print(f"| {'round trip':34} | {'p50 µs':>7} | {'p99 µs':>7} | {'mean µs':>7} |")
    print(f"|{'-' * 36}|{'-' * 9}|{'-' * 9}|{'-' * 9}|")
    for name, data in [
        ("raw blocking pipe ping-pong (floor)", floor),
        ("bare trio <-> trio socket ping-pong", loops),
        ("actor -> real worker -> actor", samples),
    ]:
        p50, p99 = percentile(data, 0.5) * 1e6, percentile(data, 0.99) * 1e6
        print(f"| {name:34} | {p50:7.1f} | {p99:7.1f} | {statistics.mean(data) * 1e6:7.1f} |")
    a50, f50, t50 = (percentile(d, 0.5) for d in (samples, floor, loops))
    print(f"p50 actor / floor: {a50 / f50:.1f}x (aim: <= 2x); actor / bare trio: {a50 / t50:.1f}x")
    print(f"pipelined, {args.in_flight} in flight: {throughput:,.0f} calls/s (aim: >= 30,000)")


if __name__ == "__main__":
    main()
