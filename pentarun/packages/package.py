"""A whole plugin package, checked: archive, identity, manifest, test plan, requirements. Pure.

`inspect_package(zip bytes)` and `inspect_files(name -> bytes)` (a source tree) run every check
and return either a `Package` or every problem found, each with a code and a path.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from .archive import ArchiveLimits, read_archive
from .identity import FILE as PLUGIN_ID
from .identity import PluginId, check_identity
from .manifest import Installed, Manifest, validate_manifest
from .problems import Problem
from .requirements import parse_requirements
from .testplan import TestPlan, validate_test_plan

DEFINITION = "definition.json"
TEST_PLAN = "tests/test_plan.json"
ENTRYPOINT = "worker/plugin_worker.py"
README = "README.md"
REQUIREMENTS = "requirements.txt"
WIZARD = "ui/wizard.html"
REQUIRED = (PLUGIN_ID, DEFINITION, TEST_PLAN, ENTRYPOINT, README)


@dataclass(frozen=True)
class InspectContext:
    engine_version: str
    limits: ArchiveLimits = field(default_factory=ArchiveLimits)
    trust: Mapping[str, Ed25519PublicKey] = field(default_factory=dict)
    require_signatures: bool = False
    installed: Mapping[str, Installed] | None = None  # None: authoring, deps not resolved


@dataclass(frozen=True)
class Package:
    plugin_id: PluginId | None
    manifest: Manifest
    test_plan: TestPlan
    requirements: list[str]
    files: Mapping[str, bytes]
    digest: str

    @property
    def key(self) -> str:
        return self.manifest.key

    @property
    def version(self) -> str:
        return self.manifest.version


def _json(files: Mapping[str, bytes], name: str, code: str) -> tuple[Any, list[Problem]]:
    try:
        return json.loads(files[name].decode("utf-8")), []
    except (UnicodeDecodeError, ValueError) as exc:
        return None, [Problem(code, name, f"not valid JSON: {exc}")]


def inspect_files(
    files: Mapping[str, bytes], ctx: InspectContext, *, require_identity: bool = True
) -> tuple[Package | None, list[Problem]]:
    problems: list[Problem] = []
    required = REQUIRED if require_identity else tuple(n for n in REQUIRED if n != PLUGIN_ID)
    for name in required:
        if name not in files:
            problems.append(Problem("package.missing_file", name, "required file is missing"))

    identity: PluginId | None = None
    if PLUGIN_ID in files:
        identity, found = check_identity(files, ctx.trust, ctx.require_signatures)
        problems += found
    elif not require_identity and ctx.require_signatures:
        problems.append(Problem("signature.missing", PLUGIN_ID, "this server requires signatures"))

    manifest: Manifest | None = None
    if DEFINITION in files:
        raw, found = _json(files, DEFINITION, "manifest.invalid_json")
        problems += found
        if not found:
            ident = (identity.key, identity.version) if identity else _raw_identity(files)
            manifest, found = validate_manifest(
                raw, identity=ident, engine_version=ctx.engine_version, installed=ctx.installed
            )
            problems += found

    plan: TestPlan | None = None
    if TEST_PLAN in files:
        raw, found = _json(files, TEST_PLAN, "test_plan.invalid_json")
        problems += found
        if not found:
            handlers = set(manifest.handlers) if manifest else _raw_handlers(files)
            # an unreadable definition.json is reported once, not again for every case
            plan, found = validate_test_plan(raw, handlers)
            problems += found

    if ENTRYPOINT in files:
        try:
            compile(files[ENTRYPOINT], ENTRYPOINT, "exec", dont_inherit=True)
        except (SyntaxError, ValueError) as exc:
            line = getattr(exc, "lineno", None)
            where = f"{ENTRYPOINT}:{line}" if line else ENTRYPOINT
            problems.append(Problem("package.syntax_error", where, f"not valid Python: {exc}"))

    requirements: list[str] = []
    if REQUIREMENTS in files:
        try:
            requirements, found = parse_requirements(files[REQUIREMENTS].decode("utf-8"))
            problems += found
        except UnicodeDecodeError:
            problems.append(Problem("requirements.invalid_line", REQUIREMENTS, "not UTF-8 text"))
    if manifest is not None and manifest.ui.get("wizard") and WIZARD not in files:
        problems.append(Problem("package.missing_file", WIZARD, "definition.json names a wizard"))

    if problems or manifest is None or plan is None:
        return None, problems
    return Package(identity, manifest, plan, requirements, files, _digest(files)), []


def inspect_package(data: bytes, ctx: InspectContext) -> tuple[Package | None, list[Problem]]:
    files, problems = read_archive(data, ctx.limits)
    if problems:
        return None, problems
    package, problems = inspect_files(files, ctx)
    if package is None:
        return None, problems
    return Package(
        package.plugin_id,
        package.manifest,
        package.test_plan,
        package.requirements,
        package.files,
        hashlib.sha256(data).hexdigest(),
    ), []


def _digest(files: Mapping[str, bytes]) -> str:
    h = hashlib.sha256()
    for name in sorted(files):
        h.update(name.encode() + b"\0" + hashlib.sha256(files[name]).digest())
    return h.hexdigest()


def _raw_identity(files: Mapping[str, bytes]) -> tuple[str, str] | None:
    """plugin.id's key and version even when plugin.id has other problems."""
    try:
        raw = json.loads(files[PLUGIN_ID])
        return (str(raw["key"]), str(raw["version"]))
    except (KeyError, TypeError, ValueError):
        return None


def _raw_handlers(files: Mapping[str, bytes]) -> set[str] | None:
    """The declared handlers, or None when definition.json cannot tell."""
    try:
        handlers = json.loads(files[DEFINITION]).get("handlers", [])
        return {h for h in handlers if isinstance(h, str)}
    except (KeyError, AttributeError, TypeError, ValueError):
        return None
