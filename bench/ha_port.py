"""GET /api/ha/v1/cameras end to end, beside a bare quart-trio app answering the same JSON.

Both servers run as their own processes on 127.0.0.1 and get the same load from this process:
`--connections` keep-alive connections with raw sockets (an HTTP client library would cost
more CPU than the servers), `--requests` in total. pentarun's path: listener, key auth, rate
limit, actor, IPC, the real Home Assistant plugin, a core call for the cameras, and back.
The plugin's rate limit is raised for the run, else the limiter would answer most requests.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

import httpx
import trio
from _serve import start_server

from pentarun.packages.builder import pack, read_tree

ROOT = Path(__file__).resolve().parent.parent
HA = ROOT / "plugins" / "homeassistant"
PATH = "/api/ha/v1/cameras"


class IdleClose(trio.BrokenResourceError):
    """The connection closed before any byte of the answer arrived (a kept-alive connection
    the server had closed: the request may be sent again on a new one)."""


async def keepalive_request(stream: trio.SocketStream, request: bytes) -> int:
    """Send one request on a kept-alive connection and read its whole answer; its status."""
    await stream.send_all(request)
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = await stream.receive_some(65536)
        if not chunk:
            raise (IdleClose if not data else trio.BrokenResourceError)("closed")
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    length = next(
        int(line.split(b":")[1])
        for line in head.split(b"\r\n")
        if line.lower().startswith(b"content-length")
    )
    while len(body) < length:
        body += await stream.receive_some(65536)
    return int(head.split(b" ")[1])


BARE_APP = textwrap.dedent("""
    import sys, trio
    from hypercorn.config import Config
    from hypercorn.trio import serve
    from quart import Response
    from quart_trio import QuartTrio

    body = open(sys.argv[1], "rb").read()
    app = QuartTrio("bare")

    @app.get("/api/ha/v1/cameras")
    async def cameras():
        return Response(body, content_type="application/json")

    async def main():
        config = Config(); config.bind = ["127.0.0.1:0"]; config.accesslog = None
        async with trio.open_nursery() as nursery:
            binds = await nursery.start(
                lambda task_status: serve(app, config, task_status=task_status)
            )
            print(binds[0], flush=True)

    trio.run(main)
""")


async def load(
    url: str, headers: dict[str, str], connections: int, total: int
) -> tuple[float, list[float]]:
    host, port = url.removeprefix("http://").rsplit(":", 1)
    extra = "".join(f"{k}: {v}\r\n" for k, v in headers.items())
    request = f"GET {PATH} HTTP/1.1\r\nHost: {host}\r\n{extra}\r\n".encode()
    latencies: list[float] = []
    per_connection = total // connections

    async def client() -> None:
        stream = await trio.open_tcp_stream(host, int(port))
        async with stream:
            for _ in range(per_connection):
                start = time.perf_counter()
                await stream.send_all(request)
                data = b""
                while b"\r\n\r\n" not in data:
                    data += await stream.receive_some(65536)
                head, _, body = data.partition(b"\r\n\r\n")
                assert head.startswith(b"HTTP/1.1 200"), head[:80]
                length = int(
                    next(
                        line.split(b":")[1]
                        for line in head.split(b"\r\n")
                        if line.lower().startswith(b"content-length")
                    )
                )
                while len(body) < length:
                    body += await stream.receive_some(65536)
                latencies.append(time.perf_counter() - start)

    start = time.perf_counter()
    async with trio.open_nursery() as nursery:
        for _ in range(connections):
            nursery.start_soon(client)
    return len(latencies) / (time.perf_counter() - start), latencies


def start_pentarun(
    tmp: Path, env: dict[str, str] | None = None
) -> tuple[subprocess.Popen[bytes], str, str, bytes]:
    data_dir = tmp / "var"
    server, admin_url, token = start_server(
        data_dir, {"PENTARUN_LISTENERS__HOMEASSISTANT": "127.0.0.1:0", **(env or {})}
    )
    run_file = data_dir / "run.json"
    files = read_tree(HA)
    definition = json.loads(files["definition.json"])
    definition["listener"]["rate_limit"] = {"requests": 1_000_000, "window_s": 60}
    files["definition.json"] = json.dumps(definition).encode()
    with httpx.Client(base_url=admin_url, headers={"Authorization": f"Bearer {token}"}) as admin:
        admin.post("/api/properties", json={"id": "p1", "name": "Bench"}).raise_for_status()
        for camera in ("front-door", "driveway", "garage"):
            admin.post("/api/properties/p1/cameras", json={"id": camera, "name": camera})
        admin.post(
            "/api/plugins",
            content=pack(files, "bench"),
            headers={"Content-Type": "application/zip"},
        ).raise_for_status()
        while admin.get("/api/plugins/homeassistant").json()["state"] != "VERIFIED":
            time.sleep(0.05)
        admin.post("/api/plugins/homeassistant/enable", json={"properties": ["p1"]})
        key = admin.post("/api/properties/p1/ha-keys", json={}).json()["key"]
        while "homeassistant" not in json.loads(run_file.read_text())["listeners"]:
            time.sleep(0.05)
        ha_url = json.loads(run_file.read_text())["listeners"]["homeassistant"]
        while admin.get("/api/plugins/homeassistant").json()["worker"]["state"] != "RUNNING":
            time.sleep(0.05)
    body = httpx.get(ha_url + PATH, headers={"Authorization": f"Bearer {key}"}).content
    return server, ha_url, key, body


def start_bare(tmp: Path, body: bytes) -> tuple[subprocess.Popen[bytes], str]:
    (tmp / "body.json").write_bytes(body)
    (tmp / "bare.py").write_text(BARE_APP)
    process = subprocess.Popen(
        [sys.executable, str(tmp / "bare.py"), str(tmp / "body.json")],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
    )
    assert process.stdout is not None
    return process, process.stdout.readline().decode().strip()


def report(name: str, rate: float, latencies: list[float]) -> str:
    ordered = sorted(latencies)
    p50 = ordered[len(ordered) // 2] * 1000
    p99 = ordered[int(len(ordered) * 0.99)] * 1000
    return (
        f"| {name} | {rate:,.0f} | {p50:.2f} | {p99:.2f} | {statistics.fmean(ordered) * 1000:.2f} |"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--connections", type=int, default=8)
    parser.add_argument("--requests", type=int, default=4000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        server, ha_url, key, body = start_pentarun(tmp)
        bare, bare_url = start_bare(tmp, body)
        try:
            trio.run(load, bare_url, {}, args.connections, 200)  # warm up both
            trio.run(load, ha_url, {"Authorization": f"Bearer {key}"}, args.connections, 200)
            bare_rate, bare_lat = trio.run(load, bare_url, {}, args.connections, args.requests)
            rate, lat = trio.run(
                load, ha_url, {"Authorization": f"Bearer {key}"}, args.connections, args.requests
            )
        finally:
            for process in (server, bare):
                process.terminate()
                process.wait(timeout=30)
    print(
        f"python {sys.version.split()[0]}, {os.cpu_count()} cpus, {args.connections} "
        f"connections, {args.requests} requests, {len(body)} byte JSON"
    )
    print("| server | requests/s | p50 ms | p99 ms | mean ms |\n|---|---|---|---|---|")
    print(report("bare quart-trio app, same JSON", bare_rate, bare_lat))
    print(report("pentarun HA port (auth, limit, IPC, plugin)", rate, lat))
    print(f"pentarun / bare throughput: {rate / bare_rate:.0%} (aim: >= 70%)")


if __name__ == "__main__":
    main()
