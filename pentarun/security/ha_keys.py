"""Home Assistant keys: per property, stored hashed, shown once, revocable, each with an
optional request budget; and the checks that make a stream token or a listener caller die
with the key behind it.

A key is accepted as `Authorization: Bearer <key>`, `X-API-Key: <key>`, or HTTP Basic with the
key as the password (any user name), so stock Home Assistant camera integrations work.
Every check here is one indexed read of one row (by hash or by id), cheap enough for the
event loop.
"""

from __future__ import annotations

import base64
import binascii
import secrets
import uuid
from typing import Any

from ..errors import BadRequest, Forbidden, TokenInvalid, Unauthorized
from ..store import records
from ..store.db import Database
from .operators import hash_token
from .stream_tokens import StreamClaims, StreamTokens

PREFIX = "pvh_"
MAX_KEY_CHARS = 256  # a presented key longer than this is refused without hashing it
MAX_NAME_CHARS = 200
MAX_RATE_REQUESTS = 1_000_000
MAX_RATE_WINDOW_S = 86_400.0


def new_key() -> str:
    return PREFIX + secrets.token_urlsafe(32)


def presented_key(headers: Any) -> str | None:
    """The key from any of the three accepted forms, or None when none is present.

    `headers` is any case-insensitive mapping with `.get` (quart's request.headers).
    """
    api_key = str(headers.get("X-API-Key") or "")
    if api_key:
        return api_key.strip()
    authorization = str(headers.get("Authorization") or "")
    scheme, _, value = authorization.partition(" ")
    if scheme.lower() == "bearer" and value.strip():
        return value.strip()
    if scheme.lower() == "basic" and value.strip():
        try:
            decoded = base64.b64decode(value.strip(), validate=True).decode()
        except (binascii.Error, UnicodeDecodeError):
            return ""
        return decoded.partition(":")[2]
    return None


def authenticate(db: Database, headers: Any) -> records.HaKeyRow:
    key = presented_key(headers)
    if not key:
        raise Unauthorized("missing API key (Authorization: Bearer <key>, X-API-Key or Basic)")
    row = None if len(key) > MAX_KEY_CHARS else records.ha_key_by_hash(db, hash_token(key))
    if row is None:
        raise Unauthorized("unknown or revoked API key")
    return row


def check_rate_limit(limit: records.HaKeyRateLimit) -> records.HaKeyRateLimit:
    """An operator's per-key budget, if it is sane (BadRequest naming the field otherwise)."""
    if not 1 <= limit.requests <= MAX_RATE_REQUESTS:
        raise BadRequest(f"rate_limit.requests must be between 1 and {MAX_RATE_REQUESTS}")
    if not 1 <= limit.window_s <= MAX_RATE_WINDOW_S:
        raise BadRequest(f"rate_limit.window_s must be between 1 and {MAX_RATE_WINDOW_S:g}")
    return limit


async def create_key(
    db: Database,
    property_id: str,
    name: str,
    rate_limit: records.HaKeyRateLimit | None = None,
) -> tuple[records.HaKeyRow, str]:
    """A new key for a property: its stored row and the key itself (shown once, never stored).

    `rate_limit` replaces the listener's per-key budget for this key only.
    """
    if len(name) > MAX_NAME_CHARS:
        raise BadRequest(f"name must be at most {MAX_NAME_CHARS} characters")
    if rate_limit is not None:
        check_rate_limit(rate_limit)
    key = new_key()
    row = await records.create_ha_key(
        db, uuid.uuid4().hex, property_id, hash_token(key), name, rate_limit=rate_limit
    )
    return row, key


def live_key(db: Database, key_id: str, property_id: str) -> records.HaKeyRow | None:
    """The key `key_id` if it exists, is not revoked and belongs to `property_id`."""
    row = records.get_ha_key(db, key_id)
    return row if row is not None and row.property_id == property_id else None


def check_stream_token(
    db: Database, streams: StreamTokens, token: str, camera: str | None
) -> tuple[StreamClaims, records.HaKeyRow]:
    """A stream token's claims and the key that minted it: 403 when the token is bad, expired,
    for another camera, unbound (minted before tokens named their key), or its key is revoked."""
    claims = streams.check(token, camera)
    row = live_key(db, claims.kid, claims.prop)
    if row is None:
        raise TokenInvalid(
            "the key that minted this stream token was revoked", {"reason": "key_revoked"}
        )
    return claims, row


def caller_key(
    db: Database, streams: StreamTokens, caller: str, property_id: str
) -> records.HaKeyRow:
    """The live key behind a listener caller (what `streams.token` binds a token to)."""
    verified = streams.verify_caller(caller, property_id)
    row = live_key(db, verified.key_id, property_id)
    if row is None:
        raise Forbidden("the key of this request was revoked", {"reason": "key_revoked"})
    return row


def issue_stream_token(
    db: Database,
    streams: StreamTokens,
    caller: str,
    property_id: str,
    camera: str,
    *,
    stream: str,
    protocol: str,
    ttl_s: float | None = None,
) -> dict[str, Any]:
    """The core call `streams.token`: a token bound to the key named by `caller`, as JSON.

    Refused (403) without a caller this core signed for this property, or when its key was
    revoked meanwhile: a plugin can mint tokens only for the keys of the requests it serves.
    """
    key = caller_key(db, streams, caller, property_id)
    issued = streams.issue(property_id, camera, stream, protocol, key_id=key.id, ttl_s=ttl_s)
    return {"token": issued.token, "expires_at": issued.expires_at, "expires_in": issued.expires_in}
