"""Building packages: a source tree into a deterministic zip with its plugin.id.

Deterministic: entries sorted by name, fixed timestamps and modes, so the same tree always
packs to the same bytes (and the same digest).
"""

from __future__ import annotations

import io
import json
import zipfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ..security import signing
from .identity import FILE as PLUGIN_ID
from .identity import build_plugin_id

EPOCH = (1980, 1, 1, 0, 0, 0)
SKIPPED_DIRS = {"__pycache__", ".git", ".venv", ".mypy_cache", ".pytest_cache", ".ruff_cache"}


def read_tree(root: Path) -> dict[str, bytes]:
    """Every file under `root` by its '/'-separated relative name, minus caches and dotfiles."""
    files: dict[str, bytes] = {}
    for path in sorted(root.rglob("*")):
        rel = path.relative_to(root)
        if any(part in SKIPPED_DIRS or part.startswith(".") for part in rel.parts):
            continue
        if path.suffix == ".pyc" or path.is_symlink() or not path.is_file():
            continue
        files[rel.as_posix()] = path.read_bytes()
    return files


def zip_files(files: Mapping[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for name in sorted(files):
            info = zipfile.ZipInfo(name, EPOCH)
            info.external_attr = 0o100644 << 16
            info.create_system = 3
            info.compress_type = zipfile.ZIP_DEFLATED
            archive.writestr(info, files[name])
    return buffer.getvalue()


def pack(files: Mapping[str, bytes], publisher: str = "") -> bytes:
    """Zip a source tree with a fresh (unsigned) plugin.id from its definition.json."""
    definition = json.loads(files["definition.json"])
    contents = {name: data for name, data in files.items() if name != PLUGIN_ID}
    if not publisher and PLUGIN_ID in files:
        publisher = json.loads(files[PLUGIN_ID]).get("publisher", "")
    ident = build_plugin_id(definition["key"], definition["version"], publisher, contents)
    return zip_files({**contents, PLUGIN_ID: encode_plugin_id(ident)})


def encode_plugin_id(ident: Mapping[str, Any]) -> bytes:
    return (json.dumps(ident, indent=2, sort_keys=True) + "\n").encode()


def package_name(files: Mapping[str, bytes]) -> str:
    definition = json.loads(files["definition.json"])
    return f"{definition['key']}-{definition['version']}.zip"


def sign_package(files: Mapping[str, bytes], private_pem: bytes, key_id: str) -> bytes:
    """Re-zip a package's files with plugin.id signed by this key."""
    ident = json.loads(files[PLUGIN_ID])
    signed = signing.sign(ident, signing.load_private_key(private_pem), key_id)
    return zip_files({**files, PLUGIN_ID: encode_plugin_id(signed)})
