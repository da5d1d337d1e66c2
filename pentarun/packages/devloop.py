"""`pentarun plugin dev DIR`: live reload for plugin authors (issue 10).

    pentarun plugin dev my-cam [--server http://127.0.0.1:8128] [--token-file var/admin.token]
                               [--approve] [--once]

Watches the source tree (a stat of each file every `--interval`, no extra dependency) and on
each change: validates it here (every problem printed, nothing sent), packs it as a
development build — version `<version>+dev.<n>`, build metadata, so the manifest's version
and every dependency range still hold — and uploads it to a running server, which must allow
development builds (`install.allow_dev_builds`) and marks the install `dev_build`. The server
runs the gates and swaps the new build in (its worker handover drains the old one); on a
failing gate or start it keeps the previous build running — the rollback — and this command
prints why, with the failed test cases. The server records each reload on the plugin's
timeline (`dev_reload`: previous, version, success, reason). With `--approve` a build that
needs approval is approved with its digest (you are its operator); `--once` builds once and
exits 0 when it went live, 1 when not.
"""

from __future__ import annotations

import json
import os
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ..config import Config
from .builder import pack, read_tree
from .identity import FILE as PLUGIN_ID
from .package import DEFINITION, InspectContext, inspect_package

Say = Callable[[str], None]
DEV_MARK = "+dev."
SETTLED = {"VERIFIED", "ENABLED", "DISABLED", "REJECTED", "QUARANTINED"}
LIVE = {"VERIFIED", "ENABLED"}
IGNORED_PARTS = {"__pycache__", ".git", ".venv"}


def is_dev_build(version: str) -> bool:
    return DEV_MARK in version


def dev_version(version: str, n: int) -> str:
    """`1.2.0` -> `1.2.0+dev.<n>` (an existing `+...` is replaced)."""
    return f"{version.split('+', 1)[0]}{DEV_MARK}{n}"


def snapshot(root: Path) -> dict[str, tuple[int, int]]:
    """(size, mtime_ns) of every file of the tree that would be packed."""
    found: dict[str, tuple[int, int]] = {}
    for path in root.rglob("*"):
        if path.is_file() and not IGNORED_PARTS & set(path.relative_to(root).parts):
            st = path.stat()
            found[str(path.relative_to(root))] = (st.st_size, st.st_mtime_ns)
    return found


def build(root: Path, n: int, ctx: InspectContext) -> tuple[str, str, bytes] | list[str]:
    """(key, dev version, zip) of the tree, or the problems found here."""
    files = {k: v for k, v in read_tree(root).items() if k != PLUGIN_ID}
    try:
        definition = json.loads(files[DEFINITION])
        definition["version"] = dev_version(str(definition["version"]), n)
    except (KeyError, ValueError, TypeError) as exc:
        return [f"{DEFINITION}: {exc}"]
    files[DEFINITION] = json.dumps(definition, indent=2).encode()
    data = pack(files, publisher="dev")
    package, problems = inspect_package(data, ctx)
    if package is None:
        return [f"{p.code} at {p.path}: {p.message}" for p in problems]
    return package.key, package.version, data


class Server:
    """The admin API of a running server, with an operator token (standard library only)."""

    def __init__(self, url: str, token: str, timeout_s: float = 30.0) -> None:
        self.url = url.rstrip("/")
        self.token = token
        self.timeout_s = timeout_s

    def request(
        self, method: str, path: str, body: bytes | None = None, kind: str = "application/json"
    ) -> tuple[int, Any]:
        request = urllib.request.Request(self.url + path, data=body, method=method)
        request.add_header("Authorization", f"Bearer {self.token}")
        if body is not None:
            request.add_header("Content-Type", kind)
        try:
            with urllib.request.urlopen(request, timeout=self.timeout_s) as answer:
                return answer.status, json.loads(answer.read() or b"null")
        except urllib.error.HTTPError as exc:
            try:
                return exc.code, json.loads(exc.read() or b"null")
            except ValueError:
                return exc.code, None


def _install_of(detail: dict[str, Any], version: str) -> dict[str, Any] | None:
    for name in ("upgrade", "install", "last_upgrade"):
        install = detail.get(name)
        if isinstance(install, dict) and install.get("version") == version:
            return install
    return None


def reload_once(
    server: Server, root: Path, ctx: InspectContext, say: Say, *, approve: bool, within_s: float
) -> bool:
    """Build, upload and follow one development build; True when it went live."""
    started = time.monotonic()
    built = build(root, int(time.time() * 1000), ctx)
    if isinstance(built, list):
        say(f"not sent: {len(built)} problem(s)\n" + "\n".join(f"  {p}" for p in built))
        return False
    key, version, data = built
    status, answer = server.request("POST", "/api/plugins", data, "application/zip")
    if status != 202:
        error = (answer or {}).get("error", {})
        say(f"upload refused ({status} {error.get('code')}): {error.get('message')}")
        for problem in error.get("details", {}).get("problems", []):
            say(f"  {problem['code']} at {problem['path']}: {problem['message']}")
        return False
    say(f"uploaded {key} {version}; the gates are running ...")
    deadline = time.monotonic() + within_s
    while time.monotonic() < deadline:
        status, detail = server.request("GET", f"/api/plugins/{key}")
        install = _install_of(detail or {}, version) if status == 200 else None
        if install is not None:
            pending = install.get("pending_approval")
            if install["state"] == "DEPENDENCIES_PENDING" and pending and approve:
                server.request(
                    "POST",
                    f"/api/plugins/{key}/approve",
                    json.dumps({"digest": pending["digest"]}).encode(),
                )
            elif install["state"] == "DEPENDENCIES_PENDING" and not approve:
                say("waiting for approval (or run with --approve)")
            elif install["state"] in SETTLED and not install.get("step"):
                return _report(
                    server,
                    key=key,
                    version=version,
                    install=install,
                    detail=detail,
                    started=started,
                    say=say,
                )
        time.sleep(0.1)
    say(f"{key} {version}: not settled within {within_s:g} s")
    return False


def _report(
    server: Server,
    *,
    key: str,
    version: str,
    install: dict[str, Any],
    detail: dict[str, Any],
    started: float,
    say: Say,
) -> bool:
    took = time.monotonic() - started
    if install["state"] in LIVE and install.get("active"):
        say(f"live: {key} {version} ({install['state']}) in {took:.1f} s")
        return True
    say(f"rolled back: {key} {version} is {install['state']}: {install.get('reason')}")
    say(f"still running: {detail.get('version')} ({detail.get('state')})")
    run_id = install.get("last_run_id")
    if run_id:
        status, run = server.request("GET", f"/api/plugins/{key}/tests/{run_id}")
        if status == 200:
            for gate in run.get("report", {}).get("gates", []):
                if not gate.get("ok", True) and not gate.get("cases"):
                    say(f"  {gate.get('gate')}: {gate.get('detail')}")
                for case in gate.get("cases", []):
                    if not case.get("ok", True):
                        say(f"  {gate.get('gate')}: {case.get('name')}: {case.get('detail')}")
    return False


def read_token(token: str, token_file: Path) -> str:
    if token:
        return token
    try:
        return token_file.read_text().strip()
    except OSError as exc:
        raise DevError(f"no token: pass --token or --token-file ({exc.strerror})") from None


class DevError(Exception):
    """The dev loop cannot start (no token, no source)."""


def dev(
    root: Path,
    server: Server,
    config: Config,
    ctx: InspectContext,
    say: Say,
    *,
    approve: bool = False,
    once: bool = False,
    interval_s: float = 0.3,
) -> int:
    if not (root / DEFINITION).is_file():
        raise DevError(f"{root} is not a plugin source directory (no {DEFINITION})")
    within = config.install.pip_timeout_s + 120
    if once:
        return 0 if reload_once(server, root, ctx, say, approve=approve, within_s=within) else 1
    say(f"watching {root} (Ctrl-C to stop)")
    seen: dict[str, tuple[int, int]] = {}
    while True:
        now = snapshot(root)
        if now != seen:
            time.sleep(interval_s)  # let an editor finish writing
            seen = snapshot(root)
            reload_once(server, root, ctx, say, approve=approve, within_s=within)
        time.sleep(interval_s)


def token_path(config: Config) -> Path:
    return Path(os.path.expanduser(config.server.data_dir)) / "admin.token"
