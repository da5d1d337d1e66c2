"""Home Assistant keys: per property, stored hashed, shown once, revocable.

A key is accepted as `Authorization: Bearer <key>`, `X-API-Key: <key>`, or HTTP Basic with the
key as the password (any user name), so stock Home Assistant camera integrations work.
"""

from __future__ import annotations

import base64
import binascii
import secrets
from typing import Any

from ..errors import Unauthorized
from ..store import records
from ..store.db import Database
from .operators import hash_token

PREFIX = "pvh_"


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
    row = records.ha_key_by_hash(db, hash_token(key))
    if row is None:
        raise Unauthorized("unknown or revoked API key")
    return row
