"""Start `pentarun serve` as a separate process for a benchmark, and wait until it serves."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path


def start_server(
    data_dir: Path, env: dict[str, str] | None = None
) -> tuple[subprocess.Popen[bytes], str, str]:
    """(process, admin URL, root token) of a fresh server on 127.0.0.1, logging warnings only."""
    server = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "pentarun",
            "serve",
            "--data-dir",
            str(data_dir),
            "--admin-bind",
            "127.0.0.1:0",
            "--log-level",
            "WARNING",
        ],
        env={**os.environ, **(env or {})},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    run_file = data_dir / "run.json"
    while not run_file.exists():
        if server.poll() is not None:
            raise SystemExit(f"the server exited with code {server.returncode}")
        time.sleep(0.05)
    admin_url = json.loads(run_file.read_text())["admin_url"]
    return server, admin_url, (data_dir / "admin.token").read_text().strip()
