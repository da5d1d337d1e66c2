"""The trust store: a directory of `<key_id>.pub` PEM files that plugin.id may be signed by.

`TrustStore` re-reads the directory whenever it changed (a fingerprint of the directory's and
each `.pub` file's mtime and size, checked by `refresh()` before each use), so a key copied in
by hand is honoured at once, without a restart. Keys added through the admin API are written
atomically (temporary file, then rename) as PEM; a key id names its file, so it is limited to
`KEY_ID`. Every method touches the disk: call them off the trio thread.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import logging
import os
import re
import threading
from collections.abc import Mapping
from pathlib import Path

import msgspec
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from ..errors import BadRequest, Conflict, NotFound
from .signing import load_public_key

log = logging.getLogger(__name__)

# \Z, not $: `$` also matches before a final "\n" (a file name the DELETE route never reaches)
KEY_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}\Z")
SUFFIX = ".pub"

# Ed25519 (RFC 8032 §5.1.3): a public key is a point of the curve, encoded in 32 bytes
_P = 2**255 - 19
_D = (-121665 * pow(121666, _P - 2, _P)) % _P


class TrustedKey(msgspec.Struct, frozen=True):
    key_id: str
    public_key: str  # base64 of the raw 32-byte Ed25519 key
    added_at: float | None = None  # when its file was written, if known


def load_trust_store(directory: Path) -> dict[str, Ed25519PublicKey]:
    """key id -> public key; unreadable files are logged and skipped; no directory, no keys."""
    trust: dict[str, Ed25519PublicKey] = {}
    if not directory.is_dir():
        return trust
    for path in sorted(directory.glob("*" + SUFFIX)):
        try:
            trust[path.stem] = load_public_key(path.read_bytes())
        except (OSError, ValueError) as exc:
            log.error("trust store: cannot load %s: %s", path, exc)
    return trust


def is_curve_point(raw: bytes) -> bool:
    """Do these 32 bytes decode to a point of edwards25519 (what a real public key is)?"""
    if len(raw) != 32:
        return False
    y = int.from_bytes(raw, "little") & ((1 << 255) - 1)
    negative_x = raw[31] >> 7
    if y >= _P:
        return False
    u, v = (y * y - 1) % _P, (_D * y * y + 1) % _P
    if v == 0:
        return False
    x2 = u * pow(v, _P - 2, _P) % _P
    if x2 == 0:
        return not negative_x
    return pow(x2, (_P - 1) // 2, _P) == 1


def parse_public_key(text: str) -> Ed25519PublicKey:
    """An Ed25519 public key from base64 of its 32 raw bytes (or a PEM); ValueError otherwise."""
    text = text.strip()
    if text.startswith("-----BEGIN"):
        return load_public_key(text.encode())
    try:
        raw = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise ValueError("public_key is not base64") from None
    if len(raw) != 32:
        raise ValueError(f"an Ed25519 public key is 32 bytes, this one is {len(raw)}")
    if not is_curve_point(raw):
        raise ValueError("these 32 bytes are not an Ed25519 public key (not a curve point)")
    return Ed25519PublicKey.from_public_bytes(raw)


def raw_base64(key: Ed25519PublicKey) -> str:
    raw = key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return base64.b64encode(raw).decode()


class TrustStore:
    """The trust directory, kept in step with the disk (see the module docstring)."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self._fingerprint: tuple[object, ...] | None = None
        self._keys: dict[str, Ed25519PublicKey] = {}
        self._added: dict[str, float] = {}
        self._lock = threading.Lock()

    def keys(self) -> Mapping[str, Ed25519PublicKey]:
        """The trusted keys, after re-reading the directory if it changed."""
        self.refresh()
        return dict(self._keys)

    def refresh(self) -> bool:
        """Re-read the directory if it changed since the last look; True when it did."""
        with self._lock:
            fingerprint = self._fingerprint_now()
            if fingerprint == self._fingerprint:
                return False
            keys = load_trust_store(self.directory)
            added: dict[str, float] = {}
            for key_id in keys:
                with contextlib.suppress(OSError):
                    added[key_id] = (self.directory / f"{key_id}{SUFFIX}").stat().st_mtime
            self._keys, self._added, self._fingerprint = keys, added, fingerprint
            return True

    def _fingerprint_now(self) -> tuple[object, ...]:
        try:
            top = os.stat(self.directory).st_mtime_ns
            with os.scandir(self.directory) as entries:
                files = sorted(
                    (e.name, e.stat().st_mtime_ns, e.stat().st_size)
                    for e in entries
                    if e.name.endswith(SUFFIX)
                )
        except (FileNotFoundError, NotADirectoryError):
            return ()
        return (top, *files)

    def entries(self) -> list[TrustedKey]:
        self.refresh()
        return [
            TrustedKey(key_id, raw_base64(key), self._added.get(key_id))
            for key_id, key in sorted(self._keys.items())
        ]

    def add(self, key_id: str, public_key: str) -> TrustedKey:
        """Trust `public_key` under `key_id`; the same key again is a no-op, another is 409."""
        if not KEY_ID.fullmatch(key_id):
            raise BadRequest(
                f"key_id must match {KEY_ID.pattern}", {"field": "key_id", "key_id": key_id[:200]}
            )
        try:
            key = parse_public_key(public_key)
        except ValueError as exc:
            raise BadRequest(f"invalid public_key: {exc}", {"field": "public_key"}) from None
        existing = self.keys().get(key_id)
        if existing is not None:
            if raw_base64(existing) != raw_base64(key):
                raise Conflict(
                    f"key {key_id!r} is already trusted with another public key; remove it first",
                    {"key_id": key_id},
                )
            return next(e for e in self.entries() if e.key_id == key_id)
        pem = key.public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        self.directory.mkdir(parents=True, exist_ok=True)
        target = self.directory / f"{key_id}{SUFFIX}"
        tmp = self.directory / f".{key_id}{SUFFIX}.part"
        tmp.write_bytes(pem)
        os.replace(tmp, target)
        self.refresh()
        return next(e for e in self.entries() if e.key_id == key_id)

    def remove(self, key_id: str) -> None:
        """Stop trusting `key_id`: NotFound when it is not trusted."""
        if not KEY_ID.fullmatch(key_id) or key_id not in self.keys():
            raise NotFound(f"no trusted key {key_id[:200]!r}", {"key_id": key_id[:200]})
        (self.directory / f"{key_id}{SUFFIX}").unlink(missing_ok=True)
        self.refresh()
