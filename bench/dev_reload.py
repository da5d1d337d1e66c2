"""`pentarun plugin dev`: from a saved file to the new code answering (issue 10), beside the
same build uploaded by hand (POST to live, no watching or packing), in the same run.

A real server (subprocess, development builds allowed, a temporary data dir), the scaffolded
plugin enabled for one property, `pentarun plugin dev` watching it. Each round changes the
greeting in the worker's source and times until a call answers with the new text; then the
same kind of change is packed here and uploaded directly, timed until a call answers with it.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from pentarun.config import Config
from pentarun.packages import authoring
from pentarun.packages.devloop import Server, build

ROOT = Path(__file__).resolve().parents[1]


def start_server(data: Path) -> tuple[subprocess.Popen[bytes], str, str]:
    env = {**os.environ, "PENTARUN_INSTALL__ALLOW_DEV_BUILDS": "true"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "pentarun", "serve", "--data-dir", str(data),
         "--admin-bind", "127.0.0.1:0"],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        run = data / "run.json"
        if run.exists():
            info = json.loads(run.read_text())
            if info["pid"] == proc.pid:
                return proc, info["admin_url"], (data / "admin.token").read_text().strip()
        time.sleep(0.05)
    raise SystemExit("the server did not start")


def greeting(server: Server) -> str:
    body = json.dumps({"handler": "devcam.hello", "property": "p1", "params": {}}).encode()
    status, answer = server.request("POST", "/api/plugins/devcam/call", body)
    return str(answer["result"]["greeting"]) if status == 200 else ""


def wait_for(server: Server, text: str, within: float = 120) -> float:
    start = time.monotonic()
    while time.monotonic() - start < within:
        if text in greeting(server):
            return time.monotonic()
        time.sleep(0.02)
    raise SystemExit(f"never answered {text!r}")


def set_greeting(worker: Path, original: str, text: str) -> None:
    worker.write_text(original.replace('"Hello, ', f'"{text}, '))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        tmp_path = Path(tmp)
        root = authoring.scaffold("devcam", tmp_path)
        worker = root / "worker" / "plugin_worker.py"
        original = worker.read_text()
        proc, url, token = start_server(tmp_path / "var")
        server = Server(url, token)
        watcher = None
        try:
            server.request(
                "POST", "/api/properties", json.dumps({"id": "p1", "name": "p1"}).encode()
            )
            dev = [sys.executable, "-m", "pentarun", "plugin", "dev", str(root), "--server", url,
                   "--token", token, "--interval", "0.1"]  # fmt: skip
            subprocess.run([*dev, "--once"], check=True, capture_output=True)
            server.request(
                "POST", "/api/plugins/devcam/enable", json.dumps({"properties": ["p1"]}).encode()
            )
            wait_for(server, "Hello")
            watcher = subprocess.Popen(dev, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            time.sleep(1)
            watched: list[float] = []
            for i in range(args.rounds):
                text = f"Hi{i}"
                saved = time.monotonic()
                set_greeting(worker, original, text)
                watched.append(wait_for(server, text) - saved)
            watcher.terminate()
            watcher.wait(10)
            watcher = None
            direct: list[float] = []
            ctx = authoring.context(Config(), None)
            for i in range(args.rounds):
                text = f"Yo{i}"
                set_greeting(worker, original, text)
                start = time.monotonic()
                built = build(root, int(time.time() * 1000), ctx)
                assert not isinstance(built, list), built
                server.request("POST", "/api/plugins", built[2], "application/zip")
                direct.append(wait_for(server, text) - start)
        finally:
            if watcher is not None:
                watcher.terminate()
            proc.terminate()
            proc.wait(30)
    print(f"python {sys.version.split()[0]}, {os.cpu_count()} cpus, {args.rounds} rounds each")
    print("| from | to the new code answering, median s | min | max |")
    print("|---|---|---|---|")
    for name, samples in (("a saved file (`plugin dev` watching)", watched),
                          ("an upload by hand (packed, POSTed)", direct)):  # fmt: skip
        low, mid, high = min(samples), statistics.median(samples), max(samples)
        print(f"| {name} | {mid:.2f} | {low:.2f} | {high:.2f} |")
    print(f"the watcher adds {statistics.median(watched) - statistics.median(direct):+.2f} s")


if __name__ == "__main__":
    main()
