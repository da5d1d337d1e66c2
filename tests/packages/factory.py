"""Builders of valid and deliberately broken packages for the tests."""

from __future__ import annotations

import copy
import io
import json
import warnings
import zipfile
from typing import Any

from pentarun.packages.builder import pack, zip_files

WORKER = b"""from pentarun.sdk import Context, Plugin

plugin = Plugin()


@plugin.handler("demo.echo")
async def echo(ctx: Context, params: dict) -> dict:
    return {"property": ctx.property, "params": params}


if __name__ == "__main__":
    plugin.run()
"""

DEFINITION: dict[str, Any] = {
    "key": "demo",
    "name": "Demo",
    "version": "1.0.0",
    "description": "a demo",
    "engine": ">=0.1,<1",
    "contracts": ["IntegrationPlugin"],
    "traits": ["example"],
    "scopes": ["properties:read"],
    "handlers": ["demo.echo"],
    "security": {"authentication_required": True, "data_classification": ["internal"]},
    "compliance": {"audit_level": "basic", "hipaa_controls": []},
    "resources": {"memory_limit": 128, "cpu_limit": 0.5},
}

PLAN = {"cases": [{"name": "echoes", "category": "integration", "handler": "demo.echo",
                   "params": {"a": 1}, "expect": {"ok": True}}]}  # fmt: skip


def definition(**changes: Any) -> dict[str, Any]:
    result = copy.deepcopy(DEFINITION)
    for name, value in changes.items():
        if value is None:
            result.pop(name, None)
        else:
            result[name] = value
    return result


def source(definition_: dict[str, Any] | None = None, **extra: bytes) -> dict[str, bytes]:
    files = {
        "definition.json": json.dumps(definition_ or DEFINITION).encode(),
        "tests/test_plan.json": json.dumps(PLAN).encode(),
        "worker/plugin_worker.py": WORKER,
        "README.md": b"# demo\n",
    }
    files.update({name.replace("__", "/"): data for name, data in extra.items()})
    return files


def package(definition_: dict[str, Any] | None = None, **extra: bytes) -> bytes:
    return pack(source(definition_, **extra), publisher="tests")


def raw_zip(entries: list[tuple[zipfile.ZipInfo | str, bytes]]) -> bytes:
    """A zip with exactly these entries (duplicates and odd modes allowed)."""
    buffer = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
            for info, data in entries:
                archive.writestr(info, data)
    return buffer.getvalue()


def unix_entry(name: str, mode: int) -> zipfile.ZipInfo:
    info = zipfile.ZipInfo(name)
    info.create_system = 3
    info.external_attr = mode << 16
    return info


def files_of(data: bytes) -> dict[str, bytes]:
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        return {name: archive.read(name) for name in archive.namelist()}


__all__ = ["definition", "files_of", "package", "raw_zip", "source", "unix_entry", "zip_files"]
