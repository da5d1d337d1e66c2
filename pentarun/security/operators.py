"""Operator bearer tokens. Only a SHA-256 of each token is stored; the token is shown once.

The first start creates a `root` operator and writes its token to `<data-dir>/admin.token`
with mode 0600.
"""

from __future__ import annotations

import hashlib
import os
import secrets
import uuid
from pathlib import Path

from ..errors import Unauthorized
from ..store import records
from ..store.db import Database

ROLES = ("root", "admin", "property_manager", "viewer")
TOKEN_FILE = "admin.token"


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def new_token() -> str:
    return "pvo_" + secrets.token_urlsafe(32)


async def ensure_root(db: Database, data_dir: Path) -> Path | None:
    """On the very first start, create the root operator; returns the token file if created."""
    if records.count_operators(db) > 0:
        return None
    token = new_token()
    path = data_dir / TOKEN_FILE
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(token + "\n")
    os.chmod(path, 0o600)
    await records.create_operator(
        db, uuid.uuid4().hex, name="root", role="root", token_hash=hash_token(token), properties=[]
    )
    return path


def authenticate(db: Database, authorization: str | None) -> records.OperatorRow:
    """The operator behind an `Authorization: Bearer <token>` header."""
    if not authorization:
        raise Unauthorized("missing operator token (Authorization: Bearer <token>)")
    scheme, _, token = authorization.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise Unauthorized("expected Authorization: Bearer <token>")
    operator = records.operator_by_token_hash(db, hash_token(token.strip()))
    if operator is None:
        raise Unauthorized("unknown or revoked operator token")
    return operator
