#!/usr/bin/env python3
"""Set up the project's virtual environment and run it: the README's two commands.

    python3 dev.py serve [ARGS...]   set up, then run `pentarun serve ARGS` (default: --demo)
    python3 dev.py test  [ARGS...]   set up, then run ruff, mypy and pytest (ARGS go to pytest)

Setup is idempotent: `.venv/` is created once and re-installed only when pyproject.toml changes.
Only the standard library is used here, so any Python 3.11+ can run this file.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import venv
from pathlib import Path

ROOT = Path(__file__).resolve().parent
VENV = ROOT / ".venv"
BIN = VENV / ("Scripts" if os.name == "nt" else "bin")
STAMP = VENV / ".pentarun-installed"


def _run(*cmd: str | Path) -> None:
    subprocess.run([str(c) for c in cmd], check=True, cwd=ROOT)


# Debian packages by the command each provides: what needs them, and which commands do
SYSTEM_PACKAGES = {"bwrap": "bubblewrap", "setpriv": "util-linux"}  # the worker sandbox
BROWSER_PACKAGES = {"chromium": "chromium", "chromedriver": "chromium-driver"}  # `test` only


def system_packages(wanted: dict[str, dict[str, str]]) -> None:
    """Install the Debian packages that are missing (as root, one `apt-get update` for all of
    them), saying what for; otherwise say what to install. `wanted`: purpose -> {command:
    package}. Without the sandbox's no plugin worker starts; without the browser's the
    console's browser tests are skipped."""
    missing = {
        purpose: sorted({pkg for tool, pkg in tools.items() if not shutil.which(tool)})
        for purpose, tools in wanted.items()
    }
    missing = {purpose: pkgs for purpose, pkgs in missing.items() if pkgs}
    if not missing:
        return
    why = "; ".join(f"{', '.join(pkgs)} for {purpose}" for purpose, pkgs in missing.items())
    if os.geteuid() != 0 or not shutil.which("apt-get"):
        print(f"missing: {why}; install them (e.g. apt-get install -y ...)", flush=True)
        return
    print(f"installing {why} (apt-get, as root) ...", flush=True)
    _run("apt-get", "update", "-qq")
    packages = sorted({pkg for pkgs in missing.values() for pkg in pkgs})
    _run("apt-get", "install", "-y", "-qq", "--no-install-recommends", *packages)


def setup(extras: str, *, browser: bool = False) -> None:
    """Create .venv and install the package with the given extras, unless already done;
    `browser`: also the system chromium and its driver (the console's browser tests)."""
    if sys.version_info < (3, 11):  # noqa: UP036 - this file must explain itself to old Pythons
        sys.exit(f"pentarun needs Python 3.11 or newer, this is {sys.version.split()[0]}")
    wanted = {"the plugin sandbox": SYSTEM_PACKAGES}
    if browser:
        wanted["the console's browser tests"] = BROWSER_PACKAGES
    system_packages(wanted)
    digest = hashlib.sha256((ROOT / "pyproject.toml").read_bytes() + extras.encode()).hexdigest()
    if STAMP.exists() and STAMP.read_text() == digest:
        return
    if not (BIN / "python").exists():
        print("creating .venv ...", flush=True)
        venv.EnvBuilder(with_pip=True).create(VENV)
    print(f"installing pentarun[{extras}] into .venv ...", flush=True)
    _run(BIN / "python", "-m", "pip", "install", "--quiet", "--upgrade", "pip")
    spec = f".[{extras}]" if extras else "."
    _run(BIN / "python", "-m", "pip", "install", "--quiet", "-e", spec)
    STAMP.write_text(digest)


def serve(args: list[str]) -> int:
    setup("")
    os.execv(BIN / "pentarun", [str(BIN / "pentarun"), "serve", *(args or ["--demo"])])


def test(args: list[str]) -> int:
    setup("dev", browser=True)
    steps = [
        [BIN / "ruff", "check", "pentarun", "tests", "bench", "plugins", "dev.py"],
        [BIN / "ruff", "format", "--check", "pentarun", "tests", "bench", "plugins", "dev.py"],
        [BIN / "mypy"],
        [BIN / "python", "-m", "pytest", *args],
    ]
    for step in steps:
        print("$", " ".join(str(s) for s in step), flush=True)
        code = subprocess.run([str(s) for s in step], check=False, cwd=ROOT).returncode
        if code != 0:
            return code
    return 0


def main() -> int:
    if len(sys.argv) < 2 or sys.argv[1] not in {"serve", "test"}:
        print(__doc__)
        return 2
    command, args = sys.argv[1], sys.argv[2:]
    return serve(args) if command == "serve" else test(args)


if __name__ == "__main__":
    sys.exit(main())
