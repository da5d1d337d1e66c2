"""The console's session and CSRF rules. Pure: time, headers and secrets are arguments.

A session begins when an operator signs in with its token: a random session id goes into the
`pentarun_session` cookie (HttpOnly, SameSite=Strict, Path=/, Secure when the console's
public URL is https) and only its sha256 is stored, with the operator, the session's start,
its last request, its absolute end and a CSRF secret.

    verdict(created_at, expires_at, last_seen_at, now, limits) -> Verdict
        VALID, IDLE (no request for `idle_s`) or EXPIRED (`absolute_s` after it began, or the
        stored end, whichever is first). Invariant: a session is never valid at or after
        created_at + absolute_s, nor idle_s or more after its last request.

    refusal(method, token_sent, expected_token, origin, fetch_site, allowed_origin)
        -> Refusal | None
        Safe methods (GET, HEAD, OPTIONS) need nothing. Any other method authenticated by
        the cookie is refused unless: Sec-Fetch-Site, when sent, is `same-origin`
        (`csrf_cross_site`); Origin, when sent, is the console's own (`csrf_cross_origin`;
        `null`, which the console's own pages send under its no-referrer policy, passes only
        with `Sec-Fetch-Site: same-origin`);
        and the X-CSRF-Token header (or a form's `csrf_token` field) is present
        (`csrf_missing`) and equals the session's token (`csrf_invalid`, compared in
        constant time). Invariant: no unsafe method passes without the session's token.

The CSRF token is an HMAC of the session's secret, so the page carries a value derived from
it (in `<meta name="csrf-token">`), never the secret itself.
"""

from __future__ import annotations

import base64
import enum
import hashlib
import hmac
import secrets
from dataclasses import dataclass
from urllib.parse import urlsplit

COOKIE = "pentarun_session"
CSRF_HEADER = "X-CSRF-Token"
CSRF_FIELD = "csrf_token"
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
TOUCH_EVERY_S = 60.0  # a session's last request is written at most this often
_CSRF_LABEL = b"pentarun console csrf v1"
_DEFAULT_PORTS = {"http": 80, "https": 443}


@dataclass(frozen=True)
class Limits:
    idle_s: float
    absolute_s: float


class Verdict(enum.Enum):
    VALID = "valid"
    IDLE = "idle"
    EXPIRED = "expired"


@dataclass(frozen=True)
class Refusal:
    code: str  # csrf_cross_site | csrf_cross_origin | csrf_missing | csrf_invalid
    message: str


def new_session_id() -> str:
    return secrets.token_urlsafe(32)


def new_secret() -> str:
    return secrets.token_urlsafe(32)


def hash_session_id(session_id: str) -> str:
    return hashlib.sha256(session_id.encode()).hexdigest()


def csrf_token(secret: str) -> str:
    """The token pages carry for a session with this secret."""
    digest = hmac.new(secret.encode(), _CSRF_LABEL, hashlib.sha256).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode()


def ends_at(created_at: float, limits: Limits) -> float:
    """When a session begun at `created_at` ends at the latest."""
    return created_at + limits.absolute_s


def verdict(
    created_at: float, expires_at: float, last_seen_at: float, now: float, limits: Limits
) -> Verdict:
    if now >= min(expires_at, ends_at(created_at, limits)) or now < created_at:
        return Verdict.EXPIRED
    if now - last_seen_at >= limits.idle_s:
        return Verdict.IDLE
    return Verdict.VALID


def needs_touch(last_seen_at: float, now: float, limits: Limits) -> bool:
    """Whether a request at `now` should be written as the session's last one: at most once
    a minute (or a tenth of the idle limit), so the idle limit is kept within that."""
    return now - last_seen_at >= min(TOUCH_EVERY_S, limits.idle_s / 10)


def origin_of(url: str) -> str:
    """`scheme://host[:port]` of a URL, lower-case, without its scheme's default port; ""
    for anything that is not an http(s) URL with a host."""
    try:
        parts = urlsplit(url.strip())
        port = parts.port
    except ValueError:
        return ""
    scheme = parts.scheme.lower()
    host = (parts.hostname or "").lower()
    if scheme not in _DEFAULT_PORTS or not host:
        return ""
    if ":" in host:  # an IPv6 literal
        host = f"[{host}]"
    if port is None or port == _DEFAULT_PORTS[scheme]:
        return f"{scheme}://{host}"
    return f"{scheme}://{host}:{port}"


def refusal(
    method: str,
    *,
    token_sent: str | None,
    expected_token: str,
    origin: str | None,
    fetch_site: str | None,
    allowed_origin: str,
) -> Refusal | None:
    """Why a cookie-authenticated request may not run (see the module docstring), or None."""
    if method.upper() in SAFE_METHODS:
        return None
    if fetch_site is not None and fetch_site.strip().lower() != "same-origin":
        return Refusal(
            "csrf_cross_site",
            f"a change from another site (Sec-Fetch-Site: {fetch_site[:40]}) is refused",
        )
    if _foreign(origin, fetch_site, allowed_origin):
        return Refusal(
            "csrf_cross_origin",
            f"a change from origin {(origin or '')[:100]!r} is refused; the console is "
            f"{allowed_origin or 'unknown'}",
        )
    if not token_sent:
        return Refusal(
            "csrf_missing",
            f"a change made with the console's session needs the {CSRF_HEADER} header "
            "(the page's csrf-token)",
        )
    if not hmac.compare_digest(token_sent.encode(), expected_token.encode()):
        return Refusal("csrf_invalid", f"the {CSRF_HEADER} does not belong to this session")
    return None


def _foreign(origin: str | None, fetch_site: str | None, allowed_origin: str) -> bool:
    """Whether Origin names another origin. `Origin: null` is what a browser sends for its
    own page's post under `Referrer-Policy: no-referrer` (the console's), and also what an
    opaque origin (a sandboxed frame) sends: it counts as this origin only when the browser
    also says `Sec-Fetch-Site: same-origin`."""
    if origin is None:
        return False
    if origin.strip() == "null":
        return (fetch_site or "").strip().lower() != "same-origin"
    return not allowed_origin or origin_of(origin) != allowed_origin


def origin_refusal(origin: str | None, fetch_site: str | None, allowed_origin: str) -> bool:
    """Whether a request without a session (the sign-in form) comes from another origin."""
    if fetch_site is not None and fetch_site.strip().lower() not in ("same-origin", "none"):
        return True
    return _foreign(origin, fetch_site, allowed_origin)


def secure_cookie(public_url: str) -> bool:
    return public_url.lower().startswith("https://")


def safe_next(target: str | None, default: str = "/") -> str:
    """Where to go after signing in: a path of this console only (never another site)."""
    if not target or not target.startswith("/") or target.startswith("//"):
        return default
    if "\\" in target or any(ord(c) < 0x20 or ord(c) == 0x7F for c in target):
        return default
    parts = urlsplit(target)
    if parts.scheme or parts.netloc or target.startswith(("/signin", "/signout")):
        return default
    return target[:2000]


__all__ = [
    "COOKIE",
    "CSRF_FIELD",
    "CSRF_HEADER",
    "SAFE_METHODS",
    "Limits",
    "Refusal",
    "Verdict",
    "csrf_token",
    "ends_at",
    "hash_session_id",
    "needs_touch",
    "new_secret",
    "new_session_id",
    "origin_of",
    "origin_refusal",
    "refusal",
    "safe_next",
    "secure_cookie",
    "verdict",
]
