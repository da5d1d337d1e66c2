"""Upgrades without an outage: Home Assistant clients while the plugin is upgraded N times.

A real server runs the real Home Assistant plugin; `--connections` keep-alive clients GET
/api/ha/v1/cameras with raw sockets. First the same clients run `--baseline` seconds with no
upgrade (the baseline, same run); then, with the clients still running, `--upgrades` new
versions are uploaded one after the other, each going through validation, the test gates and
the hand over (new worker beside the old, calls routed to it, old one drained and stopped).
Printed: requests, failures (anything but a 200, a dropped connection included: must be 0),
p50/p99/slowest for the baseline, for the whole upgrade run (the test gates load the machine
too), and for the hand-over windows alone (from the new worker's start to the old one's
stop), and per upgrade the time from upload to the new version serving and the hand over's
length.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import httpx
import trio
from ha_port import HA, PATH, IdleClose, keepalive_request, start_pentarun

from pentarun.packages.builder import pack, read_tree

Result = tuple[float, int, float]  # (wall-clock start, status (0: no answer), seconds)


def ha_package(version: str) -> bytes:
    """The HA plugin as `version`, with the rate limit `start_pentarun` gave the first one."""
    files = read_tree(HA)
    definition = json.loads(files["definition.json"])
    definition["version"] = version
    definition["listener"]["rate_limit"] = {"requests": 1_000_000, "window_s": 60}
    files["definition.json"] = json.dumps(definition).encode()
    return pack(files, "bench")


async def clients(url: str, key: str, connections: int, stop: trio.Event) -> list[Result]:
    host, port = url.removeprefix("http://").rsplit(":", 1)
    request = (
        f"GET {PATH} HTTP/1.1\r\nHost: {host}\r\nAuthorization: Bearer {key}\r\n\r\n"
    ).encode()
    results: list[Result] = []

    async def client() -> None:
        stream: trio.SocketStream | None = None
        while not stop.is_set():
            at, start = time.time(), time.perf_counter()
            try:
                with trio.fail_after(10):
                    for _attempt in range(2):
                        reused = stream is not None
                        if stream is None:
                            stream = await trio.open_tcp_stream(host, int(port))
                        try:
                            status = await keepalive_request(stream, request)
                            break
                        except IdleClose:  # a kept-alive connection the server had closed: again
                            await stream.aclose()
                            stream = None
                            if not reused:
                                raise
            except (OSError, trio.BrokenResourceError, trio.TooSlowError):
                status = 0
                if stream is not None:
                    await stream.aclose()
                stream = None
            results.append((at, status, time.perf_counter() - start))
        if stream is not None:
            await stream.aclose()

    async with trio.open_nursery() as nursery:
        for _ in range(connections):
            nursery.start_soon(client)
    return results


async def events(admin: httpx.AsyncClient, kind: str) -> list[dict]:
    found = (await admin.get("/api/plugins/homeassistant/events", params={"limit": 1000})).json()
    return [e for e in found["events"] if e["type"] == kind]


async def upgrade(admin: httpx.AsyncClient, version: str) -> tuple[float, float, float]:
    """Upload `version` and wait until it was handed over: (uploaded at, hand over began,
    hand over ended), wall-clock times."""
    uploaded_at = time.time()
    response = await admin.post(
        "/api/plugins", content=ha_package(version), headers={"Content-Type": "application/zip"}
    )
    response.raise_for_status()
    with trio.fail_after(300):
        while True:
            done = [e for e in await events(admin, "upgraded") if e["detail"]["to"] == version]
            if done:
                break
            detail = (await admin.get("/api/plugins/homeassistant")).json()
            last = detail.get("last_upgrade") or {}
            if last.get("version") == version and last.get("state") == "REJECTED":
                raise SystemExit(f"the upgrade to {version} failed: {last.get('reason')}")
            await trio.sleep(0.1)
    began = min(
        e["at"]
        for e in await events(admin, "handover")
        if e["detail"].get("role") == "successor" and e["detail"].get("version") == version
    )
    return uploaded_at, began, done[0]["at"]


def row(name: str, results: list[Result], seconds: float) -> str:
    """A table row; `seconds` the time the results were gathered in (requests/s)."""
    if not results:
        return f"| {name} | 0 | - | - | - | - | - |"
    failed = sum(1 for _, status, _ in results if status != 200)
    times = sorted(seconds for _, _, seconds in results)
    p50, p99 = times[len(times) // 2] * 1000, times[int(len(times) * 0.99)] * 1000
    rate = len(results) / max(1e-9, seconds)
    return (
        f"| {name} | {len(results):,} | {failed} | {rate:,.0f} | {p50:.1f} | {p99:.1f} | "
        f"{times[-1] * 1000:.0f} |"
    )


async def run(args: argparse.Namespace, ha_url: str, key: str, admin_url: str, token: str) -> None:
    headers = {"Authorization": f"Bearer {token}"}
    async with httpx.AsyncClient(base_url=admin_url, headers=headers, timeout=60) as admin:
        warm = trio.Event()
        async with trio.open_nursery() as nursery:
            nursery.start_soon(clients, ha_url, key, args.connections, warm)
            await trio.sleep(1.0)
            warm.set()
        baseline: list[Result] = []
        during: list[Result] = []
        windows: list[tuple[float, float, float]] = []

        async def load(into: list[Result], stop: trio.Event) -> None:
            into.extend(await clients(ha_url, key, args.connections, stop))

        stop = trio.Event()
        async with trio.open_nursery() as nursery:
            nursery.start_soon(load, baseline, stop)
            await trio.sleep(args.baseline)
            stop.set()
        stop = trio.Event()
        began = time.time()
        async with trio.open_nursery() as nursery:
            nursery.start_soon(load, during, stop)
            await trio.sleep(0.5)
            for n in range(args.upgrades):
                windows.append(await upgrade(admin, f"1.1.{n + 1}"))
            await trio.sleep(0.5)
            stop.set()
        upgrading = time.time() - began
    in_windows = sorted(r for r in during if any(b <= r[0] <= e for _, b, e in windows))
    print(
        f"python {sys.version.split()[0]}, {os.cpu_count()} cpus, {args.connections} clients, "
        f"{args.upgrades} upgrades, baseline {args.baseline:g} s"
    )
    print("| run | requests | failed | requests/s | p50 ms | p99 ms | slowest ms |")
    print("|---|---|---|---|---|---|---|")
    print(row("no upgrade (baseline)", baseline, args.baseline))
    print(row(f"{args.upgrades} upgrades (upload, gates, hand over)", during, upgrading))
    print(row("within the hand overs only", in_windows, sum(e - b for _, b, e in windows)))
    serving = [(began - uploaded) for uploaded, began, _ in windows]
    handovers = [(ended - began) * 1000 for _, began, ended in windows]
    print(
        f"per upgrade: upload to the new worker starting {min(serving):.1f}-{max(serving):.1f} s "
        f"(validation, install, the five gates, verify); hand over (new worker's start to the "
        f"old one's stop) {min(handovers):.0f}-{max(handovers):.0f} ms"
    )
    failed = sum(1 for _, status, _ in during if status != 200)
    if failed:
        raise SystemExit(f"{failed} requests failed during the upgrades")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--connections", type=int, default=4)
    parser.add_argument("--upgrades", type=int, default=5)
    parser.add_argument("--baseline", type=float, default=10.0)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp_name:
        server, ha_url, key, _ = start_pentarun(Path(tmp_name))
        data_dir = Path(tmp_name) / "var"
        token = (data_dir / "admin.token").read_text().strip()
        admin_url = json.loads((data_dir / "run.json").read_text())["admin_url"]
        try:
            trio.run(run, args, ha_url, key, admin_url, token)
        finally:
            server.terminate()
            server.wait(timeout=30)


if __name__ == "__main__":
    main()
