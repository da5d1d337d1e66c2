"""Who is asking the admin app, and signing in and out of the console. The I/O around
session.py's rules: cookies, headers, the sessions table, the failed sign-in limiter, audit.

    request_operator(services) -> OperatorRow      every /api route (gateway/app.py `operator`)
        An `Authorization` header is the bearer token, as before (no CSRF: a browser never
        sends one on its own). Without one, the `pentarun_session` cookie: a valid session's
        operator, and for a change (not GET/HEAD/OPTIONS) only with the session's CSRF token
        from the console's own origin (403 `csrf_*`, audited as `security.csrf_refused`).
        A cookie whose session ended is 401, like a bad token.

    page(permission)        console pages: a signed-in session, else a redirect to /signin
    sign_in / sign_out      the session's row, its cookie, the audit log

Sessions are read inline (one primary-key read joined with its operator); the last request
is written at most once a minute, deferred.
"""

from __future__ import annotations

import ipaddress
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from functools import wraps
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

import trio
from quart import Response, current_app, g, request

from ...errors import Forbidden, RateLimited, Unauthorized
from ...security.operators import PERMISSIONS, allowed, authenticate, hash_token, require
from ...store import records
from ..ratelimit import FailureLimiter
from . import session as rules

if TYPE_CHECKING:
    from ..app import Services

MAX_COOKIE = 200  # characters of a session cookie worth looking up
MAX_TOKEN = 512  # characters of a pasted operator token worth hashing
Handler = Callable[..., Awaitable[Any]]


class CsrfRefused(Forbidden):
    """A change through the console's session without its CSRF token, or from elsewhere.
    The code says which rule refused it (session.py): csrf_missing, csrf_invalid,
    csrf_cross_origin, csrf_cross_site."""

    def __init__(self, refusal: rules.Refusal) -> None:
        super().__init__(refusal.message, {"csrf": refusal.code})
        self.refusal_code = refusal.code

    @property
    def error_code(self) -> str:
        return self.refusal_code


@dataclass(frozen=True)
class Viewer:
    """The signed-in operator of a console request, what the templates ask `can` of."""

    session: records.SessionRow
    csrf: str

    @property
    def operator(self) -> records.OperatorRow:
        return self.session.operator

    def can(self, permission: str, property_id: str | None = None) -> bool:
        return allowed(self.session.operator, permission, property_id)

    def can_somewhere(self, permission: str) -> bool:
        """Whether the operator may do this for at least one property (property managers)."""
        op = self.session.operator
        if permission not in PERMISSIONS.get(op.role, frozenset()):
            return False
        return any(allowed(op, permission, pid) for pid in op.properties) or allowed(op, permission)


def limits(services: Services) -> rules.Limits:
    console = services.config.console
    return rules.Limits(console.session_idle_s, console.session_absolute_s)


def console_origin(services: Services) -> str:
    """The origin changes must come from: the configured public URL's, else this request's."""
    public = services.config.console.public_url
    return rules.origin_of(public) if public else rules.origin_of(request.host_url)


def _limiter(services: Services) -> FailureLimiter:
    app = current_app
    limiter = app.extensions.get("pentarun.signin_limiter")
    if not isinstance(limiter, FailureLimiter):
        console = services.config.console
        limiter = FailureLimiter(console.signin_failures, console.signin_failure_window_s)
        app.extensions["pentarun.signin_limiter"] = limiter
    return limiter


def current_session(services: Services) -> records.SessionRow | None:
    """The live session of the request's cookie (looked up once per request), or None;
    `g.session_end` then says why: "none", "unknown", "idle" or "expired"."""
    if "console_session" in g:
        found: records.SessionRow | None = g.console_session
        return found
    g.console_session = None
    g.session_end = "none"
    session_id = request.cookies.get(rules.COOKIE, "")
    if not session_id:
        return None
    g.session_end = "unknown"
    if len(session_id) > MAX_COOKIE:
        return None
    id_hash = rules.hash_session_id(session_id)
    row = records.session_by_hash(services.db, id_hash)
    if row is None:
        return None
    now = time.time()
    lim = limits(services)
    decided = rules.verdict(row.created_at, row.expires_at, row.last_seen_at, now, lim)
    if decided is not rules.Verdict.VALID:
        g.session_end = decided.value
        return None
    if rules.needs_touch(row.last_seen_at, now, lim):
        records.touch_session(services.db, id_hash, now)
    g.console_session = row
    g.session_end = ""
    return row


def viewer(services: Services) -> Viewer | None:
    row = current_session(services)
    return None if row is None else Viewer(row, rules.csrf_token(row.csrf_secret))


def request_operator(services: Services) -> records.OperatorRow:
    """The operator behind this admin API request (see the module docstring)."""
    header = request.headers.get("Authorization")
    if header or not request.cookies.get(rules.COOKIE):
        return authenticate(services.db, header)
    row = current_session(services)
    if row is None:
        raise Unauthorized(
            "the console session has ended (signed out, expired, or its operator was "
            "removed); sign in again",
            {"session": g.get("session_end", "unknown")},
        )
    problem = rules.refusal(
        request.method,
        token_sent=request.headers.get(rules.CSRF_HEADER),
        expected_token=rules.csrf_token(row.csrf_secret),
        origin=request.headers.get("Origin"),
        fetch_site=request.headers.get("Sec-Fetch-Site"),
        allowed_origin=console_origin(services),
    )
    if problem is not None:
        records.audit(
            services.db,
            f"operator:{row.operator.name}",
            "security.csrf_refused",
            risk_score=50,
            detail={
                "code": problem.code,
                "method": request.method,
                "path": request.path[:200],
                "origin": (request.headers.get("Origin") or "")[:200],
            },
        )
        raise CsrfRefused(problem)
    return row.operator


def signin_redirect(clear_cookie: bool) -> Response:
    """To the sign-in page, coming back here afterwards (htmx requests follow HX-Redirect)."""
    target = request.full_path if request.query_string else request.path
    location = "/signin?next=" + quote(rules.safe_next(target), safe="/")
    if request.headers.get("HX-Request"):
        response = Response("", status=200, headers={"HX-Redirect": location})
    else:
        response = Response("", status=303, headers={"Location": location})
    if clear_cookie:
        forget_cookie(response)
    return response


def page(permission: str = "read") -> Callable[[Handler], Handler]:
    """A console page or fragment: needs a signed-in session whose operator has
    `permission`; the handler gets the `Viewer` as `view`."""

    def wrap(handler: Handler) -> Handler:
        @wraps(handler)
        async def checked(**kwargs: Any) -> Any:
            from ..app import current_services  # noqa: PLC0415 - app imports this module

            services = current_services()
            seen = viewer(services)
            if seen is None:
                return signin_redirect(clear_cookie=bool(request.cookies.get(rules.COOKIE)))
            if not seen.can_somewhere(permission):
                require(seen.operator, permission)  # raises Forbidden with the reason
            return await handler(view=seen, **kwargs)

        return checked

    return wrap


def set_cookie(response: Response, session_id: str, services: Services) -> None:
    response.set_cookie(
        rules.COOKIE,
        session_id,
        max_age=int(services.config.console.session_absolute_s),
        path="/",
        secure=rules.secure_cookie(services.config.console.public_url),
        httponly=True,
        samesite="Strict",
    )


def forget_cookie(response: Response) -> None:
    response.delete_cookie(rules.COOKIE, path="/", httponly=True, samesite="Strict")


def client_address(trusted_proxies: Sequence[str] = ()) -> str:
    """Who is signing in: the peer, or — when the peer is a trusted proxy — the address the
    proxy appended last to X-Forwarded-For (the ones before it are the client's to forge)."""
    peer = request.remote_addr or "unknown"
    if peer not in trusted_proxies:
        return peer
    forwarded = request.headers.get("X-Forwarded-For", "")
    last = forwarded.rsplit(",", 1)[-1].strip()
    try:
        return str(ipaddress.ip_address(last))
    except ValueError:
        return peer


def check_signin_origin(services: Services) -> None:
    """The sign-in form posts only from the console itself (no login CSRF)."""
    if rules.origin_refusal(
        request.headers.get("Origin"),
        request.headers.get("Sec-Fetch-Site"),
        console_origin(services),
    ):
        raise Forbidden("signing in from another site is refused", {"csrf": "csrf_cross_origin"})


async def sign_in(services: Services, token: str) -> tuple[str, records.SessionRow]:
    """A new session for the operator whose token this is: its id (for the cookie) and row.
    RateLimited for an address that failed too often, Unauthorized (counted, audited) for a
    wrong token."""
    limiter = _limiter(services)
    address = client_address(services.config.console.trusted_proxies)
    now_m = trio.current_time()
    blocked = limiter.blocked(address, now_m)
    if blocked is not None:
        raise RateLimited(
            "too many failed sign-ins from this address; try again later",
            {"retry_after_s": blocked.reset_s},
        )
    token = token.strip()
    operator = (
        records.operator_by_token_hash(services.db, hash_token(token))
        if 0 < len(token) <= MAX_TOKEN
        else None
    )
    if operator is None:
        decision = limiter.failed(address, now_m)
        records.audit(
            services.db,
            "console",
            "security.signin_failed",
            risk_score=20,
            detail={"address": address[:100], "attempts_left": decision.remaining},
        )
        raise Unauthorized("that token is not a valid operator token (unknown or revoked)")
    now = time.time()
    await records.delete_stale_sessions(services.db, services.config.console.session_idle_s, now)
    session_id = rules.new_session_id()
    id_hash = rules.hash_session_id(session_id)
    expires_at = rules.ends_at(now, limits(services))
    secret = rules.new_secret()
    await records.create_session(
        services.db,
        id_hash,
        operator.id,
        created_at=now,
        expires_at=expires_at,
        csrf_secret=secret,
    )
    records.audit(
        services.db,
        f"operator:{operator.name}",
        "operator.signed_in",
        detail={"address": address[:100], "expires_at": expires_at},
    )
    return session_id, records.SessionRow(id_hash, operator, now, now, expires_at, secret)


async def sign_out(services: Services, row: records.SessionRow) -> None:
    await records.delete_session(services.db, row.id_hash)
    records.audit(services.db, f"operator:{row.operator.name}", "operator.signed_out")
