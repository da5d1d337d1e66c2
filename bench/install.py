"""Install pipeline: validation throughput and upload-to-VERIFIED time, each beside a baseline.

- Validation: `inspect_package` on the bundled hello plugin's zip, against the irreducible
  part measured in the same run: reading every zip entry and hashing it with sha256.
- Upload to VERIFIED: a real `pentarun serve`, real HTTP uploads of new versions, polled until
  VERIFIED; beside it, one worker start to handshake through a real actor (the pipeline starts
  three workers: self/integration/security/load gates, recovery restart, verification).
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import os
import statistics
import sys
import tempfile
import time
import zipfile
from pathlib import Path

import httpx
import msgspec
import trio
from _serve import start_server

from pentarun import __version__
from pentarun.assembly import assemble
from pentarun.config import SupervisorConfig
from pentarun.packages.builder import pack, read_tree
from pentarun.packages.manifest import Manifest
from pentarun.packages.package import InspectContext, inspect_package
from pentarun.store import records
from pentarun.store.db import open_database
from pentarun.supervisor.policy import Phase
from pentarun.supervisor.process import WorkerSpec

ROOT = Path(__file__).resolve().parent.parent
HELLO = ROOT / "plugins" / "hello"


def hello_package(version: str) -> bytes:
    files = read_tree(HELLO)
    definition = json.loads(files["definition.json"])
    definition["version"] = version
    files["definition.json"] = json.dumps(definition).encode()
    return pack(files, publisher="bench")


def validation(count: int) -> tuple[float, float]:
    data = hello_package("1.0.0")
    ctx = InspectContext(__version__)
    start = time.perf_counter()
    for _ in range(count):
        hashlib.sha256(data).digest()
        with zipfile.ZipFile(io.BytesIO(data)) as archive:
            for name in archive.namelist():
                hashlib.sha256(archive.read(name)).digest()
    baseline = count / (time.perf_counter() - start)
    start = time.perf_counter()
    for _ in range(count):
        package, problems = inspect_package(data, ctx)
        assert package is not None, problems
    return baseline, count / (time.perf_counter() - start)


async def worker_start(rounds: int) -> float:
    with tempfile.TemporaryDirectory() as tmp:
        async with open_database(Path(tmp) / "b.db") as db, trio.open_nursery() as nursery:
            supervisor = assemble(SupervisorConfig(), db).supervisor
            await nursery.start(supervisor.run)
            await records.upsert_plugin(db, "hello", name="hello", version="1", state="ENABLED")
            manifest = msgspec.json.decode((HELLO / "definition.json").read_bytes(), type=Manifest)
            actor = await supervisor.add(WorkerSpec("hello", HELLO), manifest)
            samples = []
            for _ in range(rounds):
                start = time.perf_counter()
                actor.start()
                await actor.wait_for(Phase.RUNNING)
                samples.append(time.perf_counter() - start)
                actor.stop()
                await actor.wait_for(Phase.STOPPED)
            nursery.cancel_scope.cancel()
    return statistics.median(samples)


def upload_to_verified(rounds: int) -> float:
    with tempfile.TemporaryDirectory() as tmp:
        data_dir = Path(tmp) / "var"
        server, url, token = start_server(data_dir)
        try:
            samples = []
            with httpx.Client(base_url=url, headers={"Authorization": f"Bearer {token}"}) as client:
                for i in range(rounds):
                    body = hello_package(f"1.0.{i}")
                    start = time.perf_counter()
                    response = client.post(
                        "/api/plugins", content=body, headers={"Content-Type": "application/zip"}
                    )
                    response.raise_for_status()
                    while True:
                        detail = client.get("/api/plugins/hello").json()
                        if detail["version"] == f"1.0.{i}" and detail["state"] in (
                            "VERIFIED",
                            "ENABLED",
                        ):
                            break
                        assert detail.get("upgrade", {}).get("state") != "REJECTED", detail
                        time.sleep(0.01)
                    samples.append(time.perf_counter() - start)
            return statistics.median(samples)
        finally:
            server.terminate()
            server.wait(timeout=30)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--validations", type=int, default=300)
    parser.add_argument("--uploads", type=int, default=5)
    args = parser.parse_args()
    baseline, validated = validation(args.validations)
    start = trio.run(worker_start, 5)
    verified = upload_to_verified(args.uploads)
    print(f"python {sys.version.split()[0]}, {os.cpu_count()} cpus")
    print("| measure | baseline | pentarun | ratio |")
    print("|---|---|---|---|")
    print(
        f"| validation (packages/s) | {baseline:,.0f} (unzip + sha256) | {validated:,.0f} | "
        f"{baseline / validated:.1f}x slower |"
    )
    print(
        f"| upload to VERIFIED (median of {args.uploads}) | {start * 1000:.0f} ms (one worker "
        f"start to handshake) | {verified * 1000:.0f} ms | {verified / start:.1f}x |"
    )


if __name__ == "__main__":
    main()
