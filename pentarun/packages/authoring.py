"""What the plugin author's commands do: scaffold, check, pack, sign, test (cli.py parses).

A checked plugin with problems raises `ProblemsFound` (the CLI exits 1, as for a failed gate);
any other `AuthoringError` means the command could not run (exit 2). Private keys are written
mode 0600 and never into a git work tree that does not ignore them.
"""

from __future__ import annotations

import json
import os
import subprocess
import tempfile
from collections.abc import Callable
from pathlib import Path

import trio

from .. import __version__
from ..config import Config
from ..sandbox.launcher import Sandbox
from ..security import signing
from ..security.trust import KEY_ID, load_trust_store
from . import installer
from .builder import pack, package_name, read_tree, sign_package
from .gates import Report, run_gates
from .implementation import static_warnings
from .manifest import KEY
from .package import ENTRYPOINT, InspectContext, Package, inspect_files, inspect_package
from .problems import Problem

Say = Callable[[str], None]


class AuthoringError(Exception):
    """A command cannot go on; the message tells the author what to fix."""


class ProblemsFound(AuthoringError):
    """The checked plugin has problems (every one is listed in the message)."""

    def __init__(self, path: Path, problems: list[Problem]) -> None:
        super().__init__(f"{path}: {len(problems)} problem(s)\n{format_problems(problems)}")
        self.problems = problems


def scaffold(name: str, parent: Path) -> Path:
    if not KEY.fullmatch(name):
        raise AuthoringError(f"{name!r} is not a plugin key: use lowercase letters, digits, '-'")
    root = parent / name
    if root.exists():
        raise AuthoringError(f"{root} already exists")
    handler = f"{name}.hello"
    definition = {
        "key": name,
        "name": name.replace("-", " ").title(),
        "version": "0.1.0",
        "description": f"The {name} plugin",
        "engine": ">=0.1,<1",
        "contracts": ["IntegrationPlugin"],
        "traits": ["example"],
        "scopes": ["properties:read"],
        "handlers": [handler],
        "security": {"authentication_required": True, "data_classification": ["internal"]},
        "compliance": {"audit_level": "basic", "hipaa_controls": []},
        "health_check": {"interval_s": 10, "timeout_s": 2},
        "resources": {"memory_limit": 128, "cpu_limit": 0.25},
        "config_schema": {"type": "object", "properties": {}},
    }
    plan = {
        "cases": [
            {
                "name": "greets",
                "category": "integration",
                "handler": handler,
                "params": {"name": "Ada"},
                "expect": {"ok": True},
            },
            {
                "name": "refuses a bad name",
                "category": "security",
                "handler": handler,
                "params": {"name": 42},
                "expect": {"ok": False, "error": "bad_name"},
            },
        ]
    }
    worker = f'''"""The {name} plugin."""

import logging

from pentarun.sdk import Context, Error, Plugin

plugin = Plugin()
log = logging.getLogger("{name}")


@plugin.handler("{handler}")
async def hello(ctx: Context, params: dict) -> dict:
    name = params.get("name", "world")
    if not isinstance(name, str):
        raise Error("bad_name", "name must be a string", 400)
    count = await ctx.store.get("greetings", 0) + 1
    await ctx.store.set("greetings", count)
    log.info("greeted %s", name)
    return {{"greeting": f"Hello, {{name}}!", "property": ctx.property, "greetings": count}}


@plugin.health
async def health(ctx: Context) -> dict:
    return {{"ok": True}}


if __name__ == "__main__":
    plugin.run()
'''
    files = {
        "definition.json": json.dumps(definition, indent=2) + "\n",
        "tests/test_plan.json": json.dumps(plan, indent=2) + "\n",
        "worker/plugin_worker.py": worker,
        "README.md": f"# {name}\n\nDescribe what this plugin does, its handlers and setup.\n",
    }
    for rel, text in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return root


def context(config: Config, trust_dir: Path | None) -> InspectContext:
    trust = load_trust_store(trust_dir) if trust_dir is not None else {}
    return InspectContext(
        __version__, trust=trust, require_signatures=config.security.require_signatures
    )


def inspect_path(path: Path, ctx: InspectContext) -> tuple[Package | None, list[Problem]]:
    """A source directory (plugin.id optional) or a zip package."""
    if path.is_dir():
        files = read_tree(path)
        return inspect_files(files, ctx, require_identity="plugin.id" in files)
    if not path.is_file():
        raise AuthoringError(f"{path}: no such file or directory")
    return inspect_package(path.read_bytes(), ctx)


def warnings_of(package: Package) -> list[Problem]:
    """What a static look finds suspicious without failing the check (see implementation.py)."""
    source = package.files.get(ENTRYPOINT, b"").decode("utf-8", errors="replace")
    return static_warnings(package.manifest, source)


def check_path(path: Path, ctx: InspectContext) -> tuple[Package, list[Problem]]:
    """The plugin and its warnings, or ProblemsFound."""
    package, problems = inspect_path(path, ctx)
    if package is None:
        raise ProblemsFound(path, problems)
    return package, warnings_of(package)


def format_problems(problems: list[Problem]) -> str:
    width = max((len(p.code) for p in problems), default=0)
    return "\n".join(f"  {p.code:<{width}}  {p.path or '-'}: {p.message}" for p in problems)


def pack_directory(root: Path, out_dir: Path, publisher: str, ctx: InspectContext) -> Path:
    check_path(root, ctx)
    files = read_tree(root)
    data = pack(files, publisher)
    out = out_dir / package_name(files)
    out.write_bytes(data)
    return out


def sign_zip(path: Path, key_file: Path, key_id: str, out: Path) -> Path:
    package, problems = inspect_package(path.read_bytes(), InspectContext(__version__))
    if package is None:
        raise ProblemsFound(path, problems)
    out.write_bytes(sign_package(package.files, key_file.read_bytes(), key_id))
    return out


def git_work_tree(path: Path) -> Path | None:
    """The git work tree that `path` (existing or not) would be inside, if any."""
    for parent in (path, *path.parents):
        if (parent / ".git").exists():
            return parent
    return None


def unignored_in_work_tree(path: Path) -> str | None:
    """Why writing a secret at `path` would risk committing it, or None when it is safe."""
    path = path.resolve()
    root = git_work_tree(path.parent)
    if root is None:
        return None
    try:
        result = subprocess.run(
            ["git", "-C", str(root), "check-ignore", "-q", "--no-index", str(path)],
            capture_output=True,
            check=False,
            timeout=10,
        )
    except (OSError, subprocess.TimeoutExpired):
        return None  # no git to commit it with either
    if result.returncode == 0:
        return None
    return (
        f"{path} would be inside the git work tree {root} and git does not ignore it: "
        f"add 'keys/' or '*.key' to {root / '.gitignore'}, or write it elsewhere with --out"
    )


def generate_keys(out_dir: Path, key_id: str) -> tuple[Path, Path]:
    """A new Ed25519 key pair: `<key_id>.key` (private, mode 0600) and `<key_id>.pub`."""
    if not KEY_ID.fullmatch(key_id):
        raise AuthoringError(f"{key_id!r} is not a key id: letters, digits, '.', '_', '-'")
    private, public = out_dir / f"{key_id}.key", out_dir / f"{key_id}.pub"
    why = unignored_in_work_tree(private)
    if why is not None:
        raise AuthoringError(f"refusing to write a private key: {why}")
    if private.exists() or public.exists():
        raise AuthoringError(f"{private} or {public} already exists")
    out_dir.mkdir(parents=True, exist_ok=True)
    private_pem, public_pem = signing.generate_key()
    fd = os.open(private, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as file:
        file.write(private_pem)
    os.chmod(private, 0o600)  # whatever the umask
    public.write_bytes(public_pem)
    return private, public


async def test_path(path: Path, config: Config, ctx: InspectContext, say: Say) -> Report:
    """The server's own gates against a source tree or a zip, staged in a temporary directory."""
    say(f"checking {path}")
    package, warnings = check_path(path, ctx)
    for warning in warnings:
        say(f"warning: {warning.code}  {warning.path}: {warning.message}")
    with tempfile.TemporaryDirectory(prefix="pentarun-test-") as tmp:
        tree = Path(tmp) / package.key
        installer.write_tree(dict(package.files), tree)
        if package.requirements:
            say(f"installing {len(package.requirements)} requirement(s)")
            try:
                await installer.install_requirements(tree, config.install)
            except installer.InstallError as exc:
                raise AuthoringError(str(exc)) from exc
        sandbox = Sandbox(config.security, Path(tmp) / "data")
        status = await trio.to_thread.run_sync(sandbox.check)
        if status.mode == "off":
            say("warning: security.sandbox is off: the gates run the worker unsandboxed")
        elif not status.ok:  # fail closed, as the server does
            raise AuthoringError(f"the sandbox cannot be set up: {status.reason}")
        say(f"running the gates of {package.key} {package.version} (sandbox {status.mode})")
        return await run_gates(
            installer.worker_spec(package.key, tree, package.manifest.resources.memory_limit),
            package.manifest,
            package.test_plan,
            config.supervisor,
            burst=config.install.load_burst,
            progress=say,
            sandbox=sandbox if sandbox.on else None,
        )


def format_report(report: Report) -> str:
    lines = []
    for gate in report.gates:
        lines.append(
            f"{'PASS' if gate.ok else 'FAIL'}  {gate.gate}"
            + (f"  ({gate.detail})" if gate.detail else "")
        )
        for case in gate.cases:
            mark = "ok " if case.ok else "XX "
            extra = f"  -- {case.detail}" if case.detail else ""
            lines.append(f"      {mark} {case.name} [{case.duration_ms:.0f} ms]{extra}")
        if gate.stats:
            s = gate.stats
            lines.append(
                f"      latency p50 {s['p50_ms']:.1f} ms, p95 {s['p95_ms']:.1f} ms, "
                f"max {s['max_ms']:.1f} ms over {s['calls']:.0f} calls"
            )
    lines.append("all gates passed" if report.ok else "FAILED: " + "; ".join(report.failures()))
    return "\n".join(lines)


def run_test(path: Path, config: Config, ctx: InspectContext, say: Say) -> Report:
    return trio.run(test_path, path, config, ctx, say)
