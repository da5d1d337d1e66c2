"""Ed25519 signatures over plugin.id. Pure (no I/O but key parsing).

What is signed: the canonical JSON (sorted keys, no spaces, UTF-8) of plugin.id without its
`signature` field. Keys are PEM (PKCS#8 private, SubjectPublicKeyInfo public).
"""

from __future__ import annotations

import base64
import binascii
import json
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

ALGORITHM = "ed25519"


def canonical_json(value: Any) -> bytes:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def signed_payload(plugin_id: dict[str, Any]) -> bytes:
    return canonical_json({k: v for k, v in plugin_id.items() if k != "signature"})


def generate_key() -> tuple[bytes, bytes]:
    """A new key pair as (private PEM, public PEM)."""
    private = Ed25519PrivateKey.generate()
    private_pem = private.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    public_pem = private.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return private_pem, public_pem


def load_private_key(pem: bytes) -> Ed25519PrivateKey:
    key = serialization.load_pem_private_key(pem, password=None)
    if not isinstance(key, Ed25519PrivateKey):
        raise ValueError("not an Ed25519 private key")
    return key


def load_public_key(pem: bytes) -> Ed25519PublicKey:
    key = serialization.load_pem_public_key(pem)
    if not isinstance(key, Ed25519PublicKey):
        raise ValueError("not an Ed25519 public key")
    return key


def sign(plugin_id: dict[str, Any], private: Ed25519PrivateKey, key_id: str) -> dict[str, Any]:
    """plugin.id with a fresh `signature` field."""
    value = base64.b64encode(private.sign(signed_payload(plugin_id))).decode()
    unsigned = {k: v for k, v in plugin_id.items() if k != "signature"}
    return {**unsigned, "signature": {"alg": ALGORITHM, "key_id": key_id, "value": value}}


def verify(plugin_id: dict[str, Any], public: Ed25519PublicKey, value: str) -> bool:
    try:
        public.verify(base64.b64decode(value, validate=True), signed_payload(plugin_id))
    except (InvalidSignature, binascii.Error, ValueError):
        return False
    return True
