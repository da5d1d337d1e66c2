"""The trust store: a directory of `<key_id>.pub` PEM files that plugin.id may be signed by."""

from __future__ import annotations

import logging
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from .signing import load_public_key

log = logging.getLogger(__name__)


def load_trust_store(directory: Path) -> dict[str, Ed25519PublicKey]:
    """key id -> public key; unreadable files are logged and skipped; no directory, no keys."""
    trust: dict[str, Ed25519PublicKey] = {}
    if not directory.is_dir():
        return trust
    for path in sorted(directory.glob("*.pub")):
        try:
            trust[path.stem] = load_public_key(path.read_bytes())
        except (OSError, ValueError) as exc:
            log.error("trust store: cannot load %s: %s", path, exc)
    return trust
