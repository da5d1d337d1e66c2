"""`pentarun serve` as a real process for end-to-end tests."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import trio


class Server:
    def __init__(self, data_dir: Path, *args: str, env: dict[str, str] | None = None) -> None:
        self.data_dir = data_dir
        self.log = open(data_dir.parent / f"server-{os.getpid()}-{id(self)}.log", "wb")  # noqa: SIM115
        data_dir.mkdir(parents=True, exist_ok=True)
        self.process = subprocess.Popen(
            [sys.executable, "-m", "pentarun", "serve", "--data-dir", str(data_dir),
             "--admin-bind", "127.0.0.1:0", *args],
            env={**os.environ, **(env or {})}, stdout=subprocess.DEVNULL, stderr=self.log,
        )  # fmt: skip

    async def started(self) -> Server:
        try:
            run = await self._run_file()
        except BaseException:
            self.stop(signal.SIGKILL)
            raise
        self.url = run["admin_url"]
        self.token = (self.data_dir / "admin.token").read_text().strip()
        return self

    async def _run_file(self) -> dict[str, Any]:
        run_file = self.data_dir / "run.json"
        with trio.fail_after(30):
            while True:
                assert self.process.poll() is None, self.output()
                if run_file.exists():
                    run = json.loads(run_file.read_text())
                    if run["pid"] == self.process.pid:
                        return run
                await trio.sleep(0.05)

    def output(self) -> str:
        self.log.flush()
        return Path(self.log.name).read_text(errors="replace")[-4000:]

    def client(self, token: str | None = "root") -> httpx.AsyncClient:
        headers = {"Authorization": f"Bearer {self.token}"} if token == "root" else {}
        return httpx.AsyncClient(base_url=self.url, headers=headers, timeout=30)

    def stop(self, sig: int = signal.SIGTERM) -> int:
        if self.process.poll() is None:
            self.process.send_signal(sig)
        code = self.process.wait(timeout=30)
        self.log.close()
        return code


async def wait_state(client: httpx.AsyncClient, key: str, *states: str, within: float = 60) -> dict:
    """Poll the plugin detail until its state is one of `states`."""
    detail: dict = {}
    with trio.move_on_after(within):
        while True:
            response = await client.get(f"/api/plugins/{key}")
            if response.status_code == 200:
                detail = response.json()
                if detail["state"] in states:
                    return detail
            await trio.sleep(0.1)
    raise AssertionError(
        f"{key} never reached {states}; last: {detail.get('state')} {detail.get('reason')}"
    )


async def wait_worker(client: httpx.AsyncClient, key: str, within: float = 20) -> dict:
    with trio.fail_after(within):
        while True:
            detail = (await client.get(f"/api/plugins/{key}")).json()
            if detail.get("worker") and detail["worker"]["state"] == "RUNNING":
                return detail
            await trio.sleep(0.05)
