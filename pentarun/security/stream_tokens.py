"""Stream tokens: short-lived HS256 JWTs for one camera stream of one property.

Signed with a secret kept in the data directory (mode 0600), so tokens survive worker and
server restarts. Claims: `prop`, `cam`, `stream`, `proto`, `exp`, `jti`.
"""

from __future__ import annotations

import os
import secrets
import time
import uuid
from pathlib import Path
from typing import Any

import jwt

from ..errors import BadRequest, Forbidden, TokenInvalid

ALGORITHM = "HS256"
MAX_TTL_S = 24 * 3600


def load_secret(path: Path) -> bytes:
    """The stream-signing secret; created with mode 0600 on first use."""
    if not path.exists():
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as handle:
            handle.write(secrets.token_bytes(32))
    return path.read_bytes()


class StreamTokens:
    def __init__(self, secret: bytes, default_ttl_s: float = 300.0) -> None:
        self._secret = secret
        self.default_ttl_s = default_ttl_s

    def issue(
        self,
        property_id: str,
        camera: str,
        stream: str,
        protocol: str,
        *,
        ttl_s: float | None = None,
        now: float | None = None,
    ) -> dict[str, Any]:
        ttl = self.default_ttl_s if ttl_s is None else ttl_s
        if not 0 < ttl <= MAX_TTL_S:
            raise BadRequest(f"ttl_s must be between 1 and {MAX_TTL_S}")
        issued = time.time() if now is None else now
        expires = issued + ttl
        claims = {
            "prop": property_id,
            "cam": camera,
            "stream": stream,
            "proto": protocol,
            "iat": issued,
            "exp": expires,
            "jti": uuid.uuid4().hex,
        }
        token = jwt.encode(claims, self._secret, algorithm=ALGORITHM)
        return {"token": token, "expires_at": expires, "expires_in": int(ttl)}

    def verify(
        self, token: str, camera: str | None = None, now: float | None = None
    ) -> dict[str, Any]:
        """Claims of a valid token for this camera; 403 errors otherwise."""
        try:
            claims: dict[str, Any] = jwt.decode(
                token,
                self._secret,
                algorithms=[ALGORITHM],
                options={"verify_exp": False, "require": ["prop", "cam", "exp"]},
            )
        except jwt.InvalidTokenError as exc:
            raise TokenInvalid("invalid stream token", {"reason": "invalid"}) from exc
        if claims["exp"] <= (time.time() if now is None else now):
            raise TokenInvalid("stream token expired", {"reason": "expired"})
        if camera is not None and claims["cam"] != camera:
            raise Forbidden("stream token is for another camera", {"reason": "wrong_camera"})
        return claims
