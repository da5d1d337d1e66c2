"""The zygote moonshot, measured (issue 8): what forking workers from a template that has
already imported the SDK would give, beside what a cold start costs, in the same run.

- ready: from asking for a worker until its process has imported the SDK and the bench plugin
  and said so on a pipe, median of `--starts`:
    cold       `python plugin_worker.py` (what every start does today, sandbox aside);
    forked     `os.fork()` of a template that imported the SDK once (`gc.freeze()` first, so
               the collector does not touch the inherited objects), then the plugin's import;
  beside `python -c pass` (the process floor). The sandboxed cold start-to-ready of a real
  worker (bench/sandbox.py) is the figure a zygote would have to beat.
- memory: proportional set size (PSS, /proc/<pid>/smaps_rollup: shared pages divided among
  the processes sharing them) of `--idle` idle workers, all cold-started, beside the same
  number forked from one template (the template's own PSS counted too).

Unsandboxed on purpose: it measures the ceiling of the idea. Why the template cannot be
shared between sandboxed plugins is in the README (Sandbox: the zygote).
"""

from __future__ import annotations

import argparse
import gc
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PLUGIN = ROOT / "bench" / "plugins" / "bench" / "worker" / "plugin_worker.py"
# imports the plugin as a worker does (its module defines `plugin`; it is not run), says so,
# then idles until stdin closes
CHILD = f"""
import importlib.util, os, sys
spec = importlib.util.spec_from_file_location("plugin_worker", {str(PLUGIN)!r})
module = importlib.util.module_from_spec(spec)
spec.loader.exec_module(module)
os.write(int(sys.argv[1]), b"r")
sys.stdin.read()
"""


def pss_kb(pid: int) -> int:
    with open(f"/proc/{pid}/smaps_rollup") as handle:
        for line in handle:
            if line.startswith("Pss:"):
                return int(line.split()[1])
    return 0


def python_pass(rounds: int) -> float:
    samples = []
    for _ in range(rounds):
        start = time.perf_counter()
        subprocess.run([sys.executable, "-c", "pass"], check=True)
        samples.append(time.perf_counter() - start)
    return statistics.median(samples) * 1000


def cold(n: int) -> tuple[list[float], list[subprocess.Popen[bytes]]]:
    """Start `n` workers one after another; each stays up (idle) until its stdin closes."""
    times, procs = [], []
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    for _ in range(n):
        read, write = os.pipe()
        start = time.perf_counter()
        proc = subprocess.Popen(
            [sys.executable, "-c", CHILD, str(write)],
            stdin=subprocess.PIPE,
            pass_fds=(write,),
            env=env,
        )
        os.close(write)
        os.read(read, 1)
        times.append((time.perf_counter() - start) * 1000)
        os.close(read)
        procs.append(proc)
    return times, procs


def template(n: int, report: int) -> None:
    """The zygote: import the SDK once, then fork `n` children, timing each to ready; write
    the times and the pids to `report`, then wait for stdin to close."""
    import pentarun.sdk  # noqa: F401, PLC0415 - what every worker imports

    gc.freeze()  # inherited objects stay out of the collector's reach: fewer pages copied
    times, pids, hold = [], [], []
    for _ in range(n):
        read, write = os.pipe()
        stop_read, stop_write = os.pipe()
        start = time.perf_counter()
        pid = os.fork()
        if pid == 0:  # a child keeps none of the template's other descriptors
            for fd in (read, stop_write, report, *hold):
                os.close(fd)
            sys.argv = ["child", str(write)]
            exec(CHILD.replace("sys.stdin.read()", f"os.read({stop_read}, 1)"))
            os._exit(0)
        os.close(write)
        os.close(stop_read)
        os.read(read, 1)
        times.append((time.perf_counter() - start) * 1000)
        os.close(read)
        pids.append(pid)
        hold.append(stop_write)
    os.write(report, repr((times, pids)).encode())
    os.close(report)
    sys.stdin.read()
    for fd in hold:
        os.close(fd)
    for pid in pids:
        os.waitpid(pid, 0)


def forked(n: int) -> tuple[list[float], int, list[int], subprocess.Popen[bytes]]:
    read, write = os.pipe()
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    code = f"import sys; sys.path.insert(0, {str(ROOT / 'bench')!r}); import zygote; "
    code += f"zygote.template({n}, {write})"
    proc = subprocess.Popen(
        [sys.executable, "-c", code], stdin=subprocess.PIPE, pass_fds=(write,), env=env
    )
    os.close(write)
    data = b""
    while chunk := os.read(read, 65536):
        data += chunk
    os.close(read)
    times, pids = eval(data)
    return times, proc.pid, pids, proc


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--starts", type=int, default=20)
    parser.add_argument("--idle", type=int, default=50)
    args = parser.parse_args()
    n = max(args.starts, args.idle)
    floor = python_pass(args.starts)

    cold_times, cold_procs = cold(n)
    time.sleep(1)  # settle: lazy page faults of the start are over
    cold_pss = sum(pss_kb(p.pid) for p in cold_procs[: args.idle])
    for proc in cold_procs:
        proc.stdin.close()  # type: ignore[union-attr]
        proc.wait()

    fork_times, zygote_pid, child_pids, zygote = forked(n)
    time.sleep(1)
    fork_pss = pss_kb(zygote_pid) + sum(pss_kb(pid) for pid in child_pids[: args.idle])
    zygote.stdin.close()  # type: ignore[union-attr]
    zygote.wait()

    cold_ms, fork_ms = statistics.median(cold_times), statistics.median(fork_times)
    print(f"python {sys.version.split()[0]}, {os.cpu_count()} cpus, median of {n} starts")
    print("| start | ready ms | PSS of idle workers MB |")
    print("|---|---|---|")
    print(f"| `python -c pass` (process floor) | {floor:.1f} | |")
    print(f"| cold: python + SDK + plugin | {cold_ms:.1f} | {cold_pss / 1024:.0f} ({args.idle}) |")
    print(
        f"| forked from a template (SDK imported, gc.freeze) | {fork_ms:.1f} "
        f"| {fork_pss / 1024:.0f} ({args.idle} + the template) |"
    )
    print(
        f"forking is {cold_ms / fork_ms:.1f}x faster to ready; "
        f"PSS {fork_pss / cold_pss:.2f}x of cold starts"
    )


if __name__ == "__main__":
    main()
