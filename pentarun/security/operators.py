"""Operators: bearer tokens and roles. Only a SHA-256 of each token is stored; shown once.

The first start creates a `root` operator and writes its token to `<data-dir>/admin.token`
with mode 0600. Roles (what each may do is the PERMISSIONS table):
    root              everything
    admin             everything but managing root operators
    property_manager  read; and for its listed properties only: enable/disable plugins, cameras,
                      Home Assistant keys, calls, events
    viewer            read only
Trusted publisher keys are managed by root and admin only.

The rules of creating and revoking operators live here (`check_new_operator` and
`check_revocation` are pure); `create_by` and `revoke_by` carry them out and audit them.
"""

from __future__ import annotations

import hashlib
import os
import secrets
import uuid
from collections.abc import Sequence
from pathlib import Path

from ..errors import BadRequest, Conflict, Forbidden, NotFound, Unauthorized
from ..store import records
from ..store.db import Database

ROLES = ("root", "admin", "property_manager", "viewer")

READ = "read"
MANAGE_PLUGINS = "plugins.manage"  # upload, approve, test, quarantine, release, uninstall
ASSIGN = "plugins.assign"  # enable/disable for a property
PROPERTIES = "properties.create"
CAMERAS = "cameras.manage"
HA_KEYS = "ha_keys.manage"
CALL = "plugins.call"
EVENTS = "events.publish"
OPERATORS = "operators.manage"
AUDIT = "audit.read"
TRUST = "trust.manage"  # list, add and remove trusted publisher keys

_EVERYTHING = frozenset(
    {READ, MANAGE_PLUGINS, ASSIGN, PROPERTIES, CAMERAS, HA_KEYS, CALL, EVENTS, OPERATORS, AUDIT}
    | {TRUST}
)
PERMISSIONS: dict[str, frozenset[str]] = {
    "root": _EVERYTHING,
    "admin": _EVERYTHING,
    "property_manager": frozenset({READ, ASSIGN, CAMERAS, HA_KEYS, CALL, EVENTS, AUDIT}),
    "viewer": frozenset({READ}),
}
PROPERTY_SCOPED = {"property_manager"}


def allowed(op: records.OperatorRow, permission: str, property_id: str | None = None) -> bool:
    if permission not in PERMISSIONS.get(op.role, frozenset()):
        return False
    if op.role in PROPERTY_SCOPED and permission != READ:
        return property_id is not None and property_id in op.properties
    return True


def require(op: records.OperatorRow, permission: str, property_id: str | None = None) -> None:
    """Raise Forbidden unless this operator may do this (for this property)."""
    if not allowed(op, permission, property_id):
        where = f" for property {property_id!r}" if property_id else ""
        raise Forbidden(
            f"operator {op.name!r} ({op.role}) may not {permission}{where}",
            {"role": op.role, "permission": permission, "property": property_id},
        )


def can_see_property(op: records.OperatorRow, property_id: str) -> bool:
    return op.role not in PROPERTY_SCOPED or property_id in op.properties


def check_new_operator(
    creator: records.OperatorRow, name: str, role: str, properties: Sequence[str]
) -> None:
    """BadRequest or Forbidden unless `creator` may create this operator (stored facts aside)."""
    if role not in ROLES:
        raise BadRequest(f"role must be one of {list(ROLES)}", {"role": role})
    if role == "root" and creator.role != "root":
        raise Forbidden("only root creates root operators")
    if not name.strip():
        raise BadRequest("an operator needs a name")
    if role == "property_manager" and not properties:
        raise BadRequest("a property manager needs at least one property")


def check_revocation(actor: records.OperatorRow, target: records.OperatorRow) -> None:
    """Conflict or Forbidden unless `actor` may revoke `target`."""
    if target.id == actor.id:
        raise Conflict("operators cannot revoke themselves")
    if target.role == "root" and actor.role != "root":
        raise Forbidden("only root revokes root operators")


async def create_by(
    db: Database, creator: records.OperatorRow, name: str, role: str, properties: Sequence[str]
) -> tuple[records.OperatorRow, str]:
    """A new operator created by `creator` (checked, audited) and its token, shown once."""
    check_new_operator(creator, name, role, properties)
    unique = list(dict.fromkeys(properties))
    for pid in unique:  # bounded by the request (at most a page of ids), each a primary key
        if records.get_property(db, pid) is None:
            raise NotFound(f"no property {pid!r}", {"property": pid})
    row, token = await create(db, name, role, unique)
    records.audit(
        db,
        f"operator:{creator.name}",
        "operator.created",
        detail={"id": row.id, "name": row.name, "role": row.role},
    )
    return row, token


async def revoke_by(db: Database, actor: records.OperatorRow, operator_id: str) -> None:
    """Revoke an operator's token (checked, audited); NotFound if there is none."""
    target = records.get_operator(db, operator_id)
    if target is None:
        raise NotFound(f"no operator {operator_id!r}")
    check_revocation(actor, target)
    await records.revoke_operator(db, operator_id)
    records.audit(db, f"operator:{actor.name}", "operator.revoked", detail={"id": operator_id})


async def create(
    db: Database, name: str, role: str, properties: list[str]
) -> tuple[records.OperatorRow, str]:
    """A new operator and its token (returned once, never stored)."""
    token = new_token()
    row = await records.create_operator(
        db,
        uuid.uuid4().hex,
        name=name,
        role=role,
        token_hash=hash_token(token),
        properties=properties,
    )
    return row, token


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
