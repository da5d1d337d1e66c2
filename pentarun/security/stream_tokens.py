"""Stream tokens and listener callers: both signed with the stream secret of the data directory.

Stream tokens are short-lived HS256 JWTs for one camera stream of one property. Claims:
`prop`, `cam`, `stream`, `proto`, `kid` (the id of the Home Assistant key that minted it),
`iat`, `exp`, `jti`. The secret is kept in the data directory (mode 0600), so tokens survive
worker and server restarts. A token without `kid` (minted before tokens named their key) is
refused: tokens are short-lived, and one that cannot die with its key must not work at all.
Whether the key still exists is the caller's check (`ha_keys.check_stream_token`); this
module does no I/O.

Callers: a listener that authenticated a request with a key puts `sign_caller(key, property)`
into the request it forwards to the plugin. The plugin cannot read a key out of it nor forge
one (HMAC-SHA256 over the key id, the property and an expiry, under a separate domain from
the JWTs); it hands the value back in the core call `streams.token`, and `verify_caller` tells
the core which key the token is for. A caller lives `CALLER_TTL_S`: long enough for the
plugin to answer that request, too short to matter after it.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import re
import secrets
import time
import uuid
from pathlib import Path
from typing import Any

import jwt
import msgspec

from ..errors import BadRequest, Forbidden, TokenInvalid
from .limits import MAX_STREAM_TTL_S

ALGORITHM = "HS256"
CALLER_TTL_S = 120
CALLER_VERSION = "c1"
_CALLER_DOMAIN = b"pentarun/listener-caller/v1\x00"
_KEY_ID = re.compile(r"[A-Za-z0-9_-]{1,64}")
_EXPIRY = re.compile(r"[0-9]{1,12}")
MAX_TOKEN_CHARS = 2048


class StreamClaims(msgspec.Struct, frozen=True):
    prop: str
    cam: str
    kid: str
    exp: float
    stream: str = "main"
    proto: str = "mjpeg"
    iat: float = 0.0
    jti: str = ""


class IssuedToken(msgspec.Struct, frozen=True):
    token: str
    expires_at: float
    expires_in: int


class Caller(msgspec.Struct, frozen=True):
    """Who a listener request came from, as the core verified it."""

    key_id: str
    property: str


def load_secret(path: Path) -> bytes:
    """The stream-signing secret; created with mode 0600 on first use."""
    if not path.exists():
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as handle:
            handle.write(secrets.token_bytes(32))
    return path.read_bytes()


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


class StreamTokens:
    def __init__(self, secret: bytes, default_ttl_s: float = 300.0) -> None:
        self._secret = secret
        self._caller_key = hmac.new(secret, _CALLER_DOMAIN, hashlib.sha256).digest()
        self.default_ttl_s = default_ttl_s

    # --- stream tokens ------------------------------------------------------------------------

    def issue(
        self,
        property_id: str,
        camera: str,
        stream: str,
        protocol: str,
        *,
        key_id: str,
        ttl_s: float | None = None,
        now: float | None = None,
    ) -> IssuedToken:
        """A token for one stream, bound to the key `key_id` (it dies with that key)."""
        ttl = self.default_ttl_s if ttl_s is None else ttl_s
        if not 0 < ttl <= MAX_STREAM_TTL_S:
            raise BadRequest(f"ttl_s must be between 1 and {MAX_STREAM_TTL_S}")
        if not _KEY_ID.fullmatch(key_id):
            raise BadRequest("a stream token needs the id of the key that mints it")
        issued = time.time() if now is None else now
        expires = issued + ttl
        claims = StreamClaims(
            prop=property_id,
            cam=camera,
            kid=key_id,
            exp=expires,
            stream=stream,
            proto=protocol,
            iat=issued,
            jti=uuid.uuid4().hex,
        )
        token = jwt.encode(msgspec.to_builtins(claims), self._secret, algorithm=ALGORITHM)
        return IssuedToken(token, expires, int(ttl))

    def check(
        self, token: str, camera: str | None = None, now: float | None = None
    ) -> StreamClaims:
        """Claims of a well-signed, unexpired, key-bound token for this camera; 403 otherwise
        (TokenInvalid, or Forbidden for another camera). Whether its key still lives is
        `ha_keys.check_stream_token`'s job."""
        if len(token) > MAX_TOKEN_CHARS:
            raise TokenInvalid("invalid stream token", {"reason": "invalid"})
        try:
            raw = jwt.decode(
                token,
                self._secret,
                algorithms=[ALGORITHM],
                options={"verify_exp": False, "require": ["prop", "cam", "exp"]},
            )
        except jwt.InvalidTokenError as exc:
            raise TokenInvalid("invalid stream token", {"reason": "invalid"}) from exc
        if not isinstance(raw.get("kid"), str):
            raise TokenInvalid(
                "stream token predates key binding: mint a new one", {"reason": "unbound"}
            )
        try:
            claims = msgspec.convert(raw, StreamClaims)
        except msgspec.ValidationError as exc:
            raise TokenInvalid("invalid stream token", {"reason": "invalid"}) from exc
        if claims.exp <= (time.time() if now is None else now):
            raise TokenInvalid("stream token expired", {"reason": "expired"})
        if camera is not None and claims.cam != camera:
            raise Forbidden("stream token is for another camera", {"reason": "wrong_camera"})
        return claims

    def verify(
        self, token: str, camera: str | None = None, now: float | None = None
    ) -> dict[str, Any]:
        """`check`'s claims as JSON (the answer of the core call `streams.verify`)."""
        claims: dict[str, Any] = msgspec.to_builtins(self.check(token, camera, now))
        return claims

    # --- callers ------------------------------------------------------------------------------

    def _caller_mac(self, key_id: str, property_id: str, expires: int) -> str:
        message = f"{key_id}\x00{property_id}\x00{expires}".encode()
        return _b64(hmac.new(self._caller_key, message, hashlib.sha256).digest())

    def sign_caller(self, key_id: str, property_id: str, now: float | None = None) -> str:
        """An opaque value naming the key of a listener request, valid `CALLER_TTL_S`."""
        expires = int(time.time() if now is None else now) + CALLER_TTL_S
        mac = self._caller_mac(key_id, property_id, expires)
        return f"{CALLER_VERSION}.{key_id}.{expires}.{mac}"

    def verify_caller(self, caller: str, property_id: str, now: float | None = None) -> Caller:
        """The key a caller names, if this core signed it for this property and it is fresh."""
        version, key_id, expires_text, mac = [*caller.split("."), "", "", ""][:4]
        if (
            version != CALLER_VERSION
            or not _KEY_ID.fullmatch(key_id)
            or not _EXPIRY.fullmatch(expires_text)
            or not hmac.compare_digest(
                mac, self._caller_mac(key_id, property_id, int(expires_text))
            )
        ):
            raise Forbidden(
                "streams.token needs the caller of an authenticated listener request",
                {"reason": "bad_caller"},
            )
        if int(expires_text) <= (time.time() if now is None else now):
            raise Forbidden(
                "the listener request's caller has expired", {"reason": "caller_expired"}
            )
        return Caller(key_id, property_id)
