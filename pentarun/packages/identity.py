"""plugin.id: identity, the hash of every file, and the optional Ed25519 signature. Pure."""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Mapping
from typing import Any

import msgspec
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from ..security import signing
from .problems import Problem, field

FILE = "plugin.id"
SHA256 = re.compile(r"^[0-9a-f]{64}\Z")


class Signature(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    alg: str
    key_id: str
    value: str


class PluginId(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    key: str
    version: str
    publisher: str
    files: dict[str, str]
    signature: Signature | None = None


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def build_plugin_id(
    key: str, version: str, publisher: str, files: Mapping[str, bytes]
) -> dict[str, Any]:
    """An unsigned plugin.id for these files (plugin.id itself excluded)."""
    hashes = {name: sha256(data) for name, data in sorted(files.items()) if name != FILE}
    return {"key": key, "version": version, "publisher": publisher, "files": hashes}


def check_identity(
    files: Mapping[str, bytes],
    trust: Mapping[str, Ed25519PublicKey],
    require_signatures: bool,
) -> tuple[PluginId | None, list[Problem]]:
    problems: list[Problem] = []
    try:
        raw = json.loads(files[FILE])
    except (KeyError, UnicodeDecodeError, ValueError) as exc:
        return None, [Problem("plugin_id.invalid_json", FILE, f"plugin.id is not JSON: {exc}")]
    try:
        ident = msgspec.convert(raw, PluginId)
    except msgspec.ValidationError as exc:
        return None, [Problem("plugin_id.invalid", FILE, str(exc))]

    for name, digest in sorted(ident.files.items()):
        if not SHA256.fullmatch(digest):
            problems.append(
                Problem(
                    "integrity.bad_hash",
                    field(FILE, "files", name),
                    "hashes are 64 lowercase hex characters (sha256)",
                )
            )
        elif name not in files or name == FILE:
            problems.append(
                Problem(
                    "integrity.missing_file", name, "listed in plugin.id but not in the package"
                )
            )
        elif sha256(files[name]) != digest:
            problems.append(
                Problem(
                    "integrity.hash_mismatch", name, "sha256 of the file differs from plugin.id"
                )
            )
    for name in sorted(set(files) - set(ident.files) - {FILE}):
        problems.append(
            Problem("integrity.unlisted_file", name, "in the package but not in plugin.id")
        )

    sig = ident.signature
    if sig is None:
        if require_signatures:
            problems.append(
                Problem(
                    "signature.missing",
                    field(FILE, "signature"),
                    "this server requires signed packages",
                )
            )
    elif sig.alg != signing.ALGORITHM:
        problems.append(
            Problem(
                "signature.unsupported_alg",
                field(FILE, "signature", "alg"),
                f"only {signing.ALGORITHM} is supported",
            )
        )
    elif sig.key_id not in trust:
        problems.append(
            Problem(
                "signature.untrusted_key",
                field(FILE, "signature", "key_id"),
                f"key {sig.key_id!r} is not in the trust store",
            )
        )
    elif not signing.verify(raw, trust[sig.key_id], sig.value):
        problems.append(
            Problem(
                "signature.invalid",
                field(FILE, "signature", "value"),
                "the signature does not match plugin.id",
            )
        )
    return (None, problems) if problems else (ident, [])
