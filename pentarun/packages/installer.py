"""Putting a package on disk: staging, an isolated site for its requirements, the atomic move.

Layout under the data directory:
    packages/<install id>.zip       every uploaded package, as received
    staging/<install id>/           unpacked for installing and testing
    plugins/<key>/<install id>/     installed trees; the database names the active one

A plugin's requirements go into `<tree>/site` with `pip install --target` (wheels only, from
the configured index or wheelhouse): its worker puts that directory first on its path, so
they never reach the host or another plugin. A plugin without requirements gets no site.
What pip put there is hashed right after (steps.py, integrity.py) and checked before every
start, like the plugin's own files against plugin.id.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import trio

from ..config import InstallConfig
from ..supervisor.process import WorkerSpec

SITE = "site"
REQUIREMENTS = "requirements.txt"


class InstallError(Exception):
    """A step of installation failed; the message says why (shown to operators)."""


@dataclass(frozen=True)
class Layout:
    data_dir: Path

    def package(self, install_id: str) -> Path:
        return self.data_dir / "packages" / f"{install_id}.zip"

    def staging(self, install_id: str) -> Path:
        return self.data_dir / "staging" / install_id

    def tree(self, key: str, install_id: str) -> Path:
        return self.data_dir / "plugins" / key / install_id


def worker_spec(key: str, root: Path, memory_limit_mb: int | None = None) -> WorkerSpec:
    """How a plugin's worker starts from `root`. It never writes bytecode: a `__pycache__` in
    its tree would be a file that plugin.id never listed (integrity.py counts it as extra)."""
    site = root / SITE
    env = {"PYTHONDONTWRITEBYTECODE": "1"}
    if site.is_dir():
        env["PYTHONPATH"] = str(site)
    return WorkerSpec(key, root, env=env, memory_limit_mb=memory_limit_mb)


def write_tree(files: Mapping[str, bytes], root: Path) -> None:
    """Write a package's files under a fresh `root` (blocking; run in a thread)."""
    if root.exists():
        shutil.rmtree(root)
    root.mkdir(parents=True)
    base = root.resolve()
    for name, data in files.items():
        target = (root / name).resolve()
        if base not in target.parents:  # archive checks refuse this; never trust one layer only
            raise InstallError(f"refusing to write outside the tree: {name}")
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(data)
        target.chmod(0o644)


async def install_requirements(root: Path, config: InstallConfig) -> None:
    """pip install the tree's requirements.txt into `<root>/site`; raises InstallError."""
    requirements = root / REQUIREMENTS
    if not requirements.is_file():
        return
    command = [
        sys.executable, "-m", "pip", "install", "--target", str(root / SITE), "--no-input",
        "--disable-pip-version-check", "--no-warn-script-location", "--only-binary=:all:",
        "--no-cache-dir", "-r", str(requirements),
    ]  # fmt: skip
    if config.wheelhouse:
        command += ["--no-index", "--find-links", config.wheelhouse]
    elif config.index_url:
        command += ["--index-url", config.index_url]
    env = {k: v for k, v in os.environ.items() if not k.startswith("PENTARUN_")}
    with trio.move_on_after(config.pip_timeout_s) as scope:
        result = await trio.run_process(
            command, capture_stdout=True, capture_stderr=True, check=False, env=env,
            stdin=subprocess.DEVNULL,
        )  # fmt: skip
    if scope.cancelled_caught:
        raise InstallError(f"installing requirements took longer than {config.pip_timeout_s:g} s")
    if result.returncode != 0:
        output = (result.stderr or result.stdout).decode(errors="replace").strip().splitlines()
        raise InstallError("installing requirements failed: " + " | ".join(output[-5:]))


def promote(staging: Path, tree: Path) -> None:
    """Move the staged tree into place with one rename (same filesystem); idempotent."""
    if not staging.exists():
        if tree.is_dir():
            return  # already moved before an interruption
        raise InstallError(f"nothing staged at {staging}")
    if tree.exists():
        shutil.rmtree(tree)
    tree.parent.mkdir(parents=True, exist_ok=True)
    os.replace(staging, tree)


def remove(path: Path) -> None:
    if path.is_dir():
        shutil.rmtree(path, ignore_errors=True)
    elif path.exists():
        path.unlink()
