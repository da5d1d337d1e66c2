"""Plugin tokens: short-lived HS256 JWTs issued by the supervisor when a worker starts.

Claims: `sub` plugin key, `scp` scopes, `props` assigned properties, `gen` the plugin's token
generation, `iat`, `exp`, `jti`. `revoke(key)` bumps the generation, which invalidates every
token issued before it at once. The signing secret is new for every server run, so no token
outlives the process that issued it. Verified tokens are cached by their string.
"""

from __future__ import annotations

import secrets
import time
import uuid
from collections import OrderedDict

import jwt
import msgspec

from ..errors import TokenInvalid

ALGORITHM = "HS256"
CACHE_SIZE = 1024


class PluginClaims(msgspec.Struct, frozen=True):
    sub: str
    scp: tuple[str, ...]
    props: tuple[str, ...]
    gen: int
    iat: float
    exp: float
    jti: str


class PluginTokens:
    def __init__(self, secret: bytes | None = None) -> None:
        self._secret = secret or secrets.token_bytes(32)
        self._generations: dict[str, int] = {}
        self._cache: OrderedDict[str, PluginClaims] = OrderedDict()

    def generation(self, plugin_key: str) -> int:
        return self._generations.get(plugin_key, 0)

    def issue(
        self,
        plugin_key: str,
        scopes: list[str],
        properties: list[str],
        ttl_s: float,
        now: float | None = None,
    ) -> tuple[str, float]:
        issued = time.time() if now is None else now
        expires = issued + ttl_s
        claims = {
            "sub": plugin_key,
            "scp": sorted(scopes),
            "props": sorted(properties),
            "gen": self.generation(plugin_key),
            "iat": issued,
            "exp": expires,
            "jti": uuid.uuid4().hex,
        }
        return jwt.encode(claims, self._secret, algorithm=ALGORITHM), expires

    def revoke(self, plugin_key: str) -> None:
        """Invalidate every token issued so far for this plugin."""
        self._generations[plugin_key] = self.generation(plugin_key) + 1

    def verify(self, token: str, plugin_key: str, now: float | None = None) -> PluginClaims:
        if not token:
            raise TokenInvalid("missing plugin token", {"reason": "missing"})
        now = time.time() if now is None else now
        claims = self._cache.get(token)
        if claims is None:
            try:
                raw = jwt.decode(
                    token,
                    self._secret,
                    algorithms=[ALGORITHM],
                    options={"verify_exp": False, "require": ["sub", "exp", "gen"]},
                )
                claims = msgspec.convert(raw, PluginClaims)
            except (jwt.InvalidTokenError, msgspec.ValidationError) as exc:
                raise TokenInvalid(
                    "forged or malformed plugin token", {"reason": "invalid"}
                ) from exc
            self._cache[token] = claims
            if len(self._cache) > CACHE_SIZE:
                self._cache.popitem(last=False)
        if claims.sub != plugin_key:
            raise TokenInvalid("token belongs to another plugin", {"reason": "wrong_plugin"})
        if claims.exp <= now:
            raise TokenInvalid("plugin token expired", {"reason": "expired"})
        if claims.gen != self.generation(plugin_key):
            raise TokenInvalid("plugin token revoked", {"reason": "revoked"})
        return claims
