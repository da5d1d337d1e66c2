"""Relay capacity (issue 11): concurrent MJPEG clients of one real MJPEG source through the HA
port, beside the same clients reading the source directly, in the same run.

A real server (subprocess, its own data dir, the HA listener on a free port), the HA plugin
installed through the pipeline and enabled, one camera whose source is an MJPEG server run
here (640x360 JPEGs, `--fps` a second, each frame numbered by its size so a skipped frame
shows). `--clients` clients then read for `--seconds`, first from the source directly, then
through `GET /api/ha/v1/cameras/{id}/mjpeg`. Printed: frames delivered against the frames the
source sent, aggregate frames/s, and CPU per stream (the server and the HA worker through the
port: the server's and the HA worker's processes; directly: this process, the source and
the clients). A client reading for S seconds at F fps expects S*F frames (a relayed stream
also starts with the latest frame at once). Aim: 50 clients at 640x360, 5 fps, every frame
delivered.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

import trio
from PIL import Image

from pentarun.packages.builder import pack, read_tree

ROOT = Path(__file__).resolve().parents[1]
HA_PLUGIN = ROOT / "plugins" / "homeassistant"
BOUNDARY = b"camframe"


def frames(count: int) -> list[bytes]:
    """Distinct 640x360 JPEGs (a moving bar, so each encodes differently)."""
    out = []
    for i in range(count):
        image = Image.new("RGB", (640, 360), (40, 80, 120))
        image.paste((250, 250, 250), (i * 640 // count, 0, i * 640 // count + 20, 360))
        buffer = io.BytesIO()
        image.save(buffer, format="JPEG", quality=80)
        out.append(buffer.getvalue())
    return out


class Source:
    """An MJPEG camera: every client gets the same frame at the same tick."""

    def __init__(self, jpegs: list[bytes], fps: float) -> None:
        self.jpegs, self.fps = jpegs, fps
        self.sent = 0  # frames the source produced (ticks)
        self.clients: list[trio.SocketStream] = []
        self.port = 0

    async def run(self, *, task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED) -> None:
        listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
        self.port = listeners[0].socket.getsockname()[1]
        async with trio.open_nursery() as nursery:
            nursery.start_soon(trio.serve_listeners, self._client, listeners)
            task_status.started(self.port)
            while True:
                jpeg = self.jpegs[self.sent % len(self.jpegs)]
                self.sent += 1
                part = b"--%s\r\nContent-Type: image/jpeg\r\nContent-Length: %d\r\n\r\n%s\r\n" % (
                    BOUNDARY,
                    len(jpeg),
                    jpeg,
                )
                for stream in list(self.clients):
                    nursery.start_soon(self._send, stream, part)
                await trio.sleep(1 / self.fps)

    async def _send(self, stream: trio.SocketStream, part: bytes) -> None:
        try:
            await stream.send_all(part)
        except (trio.BrokenResourceError, trio.ClosedResourceError, trio.BusyResourceError):
            if stream in self.clients:
                self.clients.remove(stream)

    async def _client(self, stream: trio.SocketStream) -> None:
        data = b""
        while b"\r\n\r\n" not in data:
            chunk = await stream.receive_some(4096)
            if not chunk:
                return
            data += chunk
        await stream.send_all(
            b"HTTP/1.1 200 OK\r\nContent-Type: multipart/x-mixed-replace; boundary=%s\r\n"
            b"Connection: close\r\n\r\n" % BOUNDARY
        )
        self.clients.append(stream)
        await trio.sleep_forever()


async def read_stream(port: int, path: str, token: str, seconds: float, boundary: bytes) -> int:
    """Parts received in `seconds` (after the response head)."""
    stream = await trio.open_tcp_stream("127.0.0.1", port)
    auth = f"Authorization: Bearer {token}\r\n" if token else ""
    await stream.send_all(f"GET {path} HTTP/1.1\r\nHost: x\r\n{auth}\r\n".encode())
    marker, count, tail = b"--" + boundary, 0, b""
    with trio.move_on_after(seconds):
        while True:
            chunk = await stream.receive_some(1 << 16)
            if not chunk:
                break
            data = tail + chunk
            count += data.count(marker)
            tail = data[-len(marker) :]
    await stream.aclose()
    return count


def cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as handle:
        fields = handle.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class Admin:
    """The server's admin API (blocking: run it in a thread)."""

    def __init__(self, url: str, token: str) -> None:
        self.url, self.token = url, token

    def call(self, method: str, path: str, body: object = None, *, raw: bytes = b"") -> Any:
        data = raw or (json.dumps(body).encode() if body is not None else None)
        request = urllib.request.Request(self.url + path, data=data, method=method)
        request.add_header("Authorization", f"Bearer {self.token}")
        request.add_header("Content-Type", "application/zip" if raw else "application/json")
        with urllib.request.urlopen(request, timeout=60) as answer:
            return json.loads(answer.read() or b"null")

    def until(self, check: Callable[[], bool], within: float = 60) -> None:
        deadline = time.monotonic() + within
        while not check():
            if time.monotonic() > deadline:
                raise SystemExit("the server never got there")
            time.sleep(0.2)

    def set_up(self, source_port: int, run_file: Path) -> tuple[str, int, int]:
        """The HA plugin installed and enabled for a camera on the source: (HA key, the
        worker's pid, the HA port)."""
        self.call("POST", "/api/properties", {"id": "p1", "name": "p1"})
        source = {"kind": "mjpeg", "url": f"http://127.0.0.1:{source_port}/video"}
        self.call(
            "POST", "/api/properties/p1/cameras", {"id": "cam", "name": "cam", "source": source}
        )
        self.call("POST", "/api/plugins", raw=pack(read_tree(HA_PLUGIN), "pentavision"))
        ha = "/api/plugins/homeassistant"
        self.until(lambda: self.call("GET", ha)["state"] == "VERIFIED")
        self.call("POST", f"{ha}/enable", {"properties": ["p1"]})
        self.until(lambda: (self.call("GET", ha).get("worker") or {}).get("state") == "RUNNING")
        key = self.call("POST", "/api/properties/p1/ha-keys", {"name": "bench"})["key"]
        self.until(lambda: "homeassistant" in json.loads(run_file.read_text())["listeners"])
        listener = json.loads(run_file.read_text())["listeners"]["homeassistant"]
        port = int(listener.rsplit(":", 1)[1].split("/")[0])
        return key, self.call("GET", ha)["worker"]["pid"], port


async def start_server(data: Path) -> tuple[trio.Process, dict[str, Any]]:
    env = {**os.environ, "PENTARUN_LISTENERS__HOMEASSISTANT": "127.0.0.1:0"}
    process = await trio.lowlevel.open_process(
        [sys.executable, "-m", "pentarun", "serve", "--data-dir", str(data),
         "--admin-bind", "127.0.0.1:0"],
        env=env, stdout=-3, stderr=-3,
    )  # fmt: skip
    run = data / "run.json"
    with trio.fail_after(30):
        while not run.exists() or json.loads(run.read_text())["pid"] != process.pid:  # noqa: ASYNC110
            await trio.sleep(0.05)
    return process, json.loads(run.read_text())


async def read_all(
    clients: int, port: int, path: str, *, auth: str, seconds: float, boundary: bytes
) -> list[int]:
    counts: list[int] = []

    async def one() -> None:
        counts.append(await read_stream(port, path, auth, seconds, boundary))

    async with trio.open_nursery() as readers:
        for _ in range(clients):
            readers.start_soon(one)
    return counts


async def main(clients: int, seconds: float, fps: float) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        async with trio.open_nursery() as nursery:
            source = Source(frames(25), fps)
            port = await nursery.start(source.run)
            process, run = await start_server(Path(tmp) / "var")
            data = Path(tmp) / "var"
            admin = Admin(run["admin_url"], (data / "admin.token").read_text().strip())
            try:
                key, worker_pid, ha_port = await trio.to_thread.run_sync(
                    admin.set_up, port, data / "run.json"
                )
                results = {}
                for name, target_port, path, auth, boundary in (
                    ("direct from the source", port, "/video", "", BOUNDARY),
                    ("through the HA port", ha_port, "/api/ha/v1/cameras/cam/mjpeg", key, b"frame"),
                ):  # fmt: skip
                    pids = [process.pid, worker_pid] if auth else [os.getpid()]
                    cpu_before = sum(cpu_seconds(p) for p in pids)
                    counts = await read_all(
                        clients, target_port, path, auth=auth, seconds=seconds, boundary=boundary
                    )
                    cpu = sum(cpu_seconds(p) for p in pids) - cpu_before
                    results[name] = (counts, cpu)
            finally:
                process.terminate()
                await process.wait()
                nursery.cancel_scope.cancel()
    print(f"python {sys.version.split()[0]}, {os.cpu_count()} cpus, {clients} clients, "
          f"640x360 at {fps:g} fps, {seconds:g} s each")  # fmt: skip
    expected = int(seconds * fps)
    print(
        "| read | frames per client (min-max) | expected | delivered (worst client) "
        "| frames/s | CPU ms per stream-second |"
    )
    print("|---|---|---|---|---|---|")
    for name, (counts, cpu) in results.items():
        worst = min(counts) / expected
        print(
            f"| {name} | {min(counts)}-{max(counts)} | {expected} | {worst:.0%} "
            f"| {sum(counts) / seconds:,.0f} | {cpu * 1000 / (clients * seconds):.2f} |"
        )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--clients", type=int, default=50)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--fps", type=float, default=5.0)
    args = parser.parse_args()
    trio.run(main, args.clients, args.seconds, args.fps)
