"""Console routes of signing in and out (the rules: session.py; the I/O: auth.py).

    GET  /signin            the form: paste an operator token
    POST /signin            token, next -> a session cookie and a redirect, or the form again
                            with what went wrong (401 wrong token, 429 too many failures,
                            403 posted from another site)
    POST /signout           csrf_token -> the session ends, its cookie is cleared

Both forms work without script. The sign-in form posts no CSRF token (there is no session
yet): a post from another site is refused by its Origin / Sec-Fetch-Site instead.
"""

from __future__ import annotations

import hmac

from quart import Blueprint, Response, request

from ...errors import PentarunError
from .. import errorjson
from ..app import current_services
from . import render, see_other
from . import session as rules
from .auth import (
    check_signin_origin,
    current_session,
    forget_cookie,
    set_cookie,
    sign_in,
    sign_out,
    viewer,
)

bp = Blueprint("console_auth", __name__)


@bp.get("/signin")
async def signin_form() -> Response:
    services = current_services()
    target = rules.safe_next(request.args.get("next"))
    if viewer(services) is not None:
        return see_other(target)
    ended = request.args.get("ended") == "1"
    return await render(None, "console/signin.html", next=target, ended=ended, error=None)


@bp.post("/signin")
async def signin() -> Response:
    services = current_services()
    form = await request.form
    target = rules.safe_next(form.get("next"))
    try:
        check_signin_origin(services)
        session_id, _ = await sign_in(services, form.get("token", ""))
    except PentarunError as exc:
        rendered = errorjson.render(exc)
        response = await render(
            None,
            "console/signin.html",
            status=rendered.status,
            next=target,
            ended=False,
            error={"code": exc.error_code, "message": exc.message},
        )
        for name, value in rendered.headers.items():
            response.headers[name] = value
        return response
    response = see_other(target)
    set_cookie(response, session_id, services)
    return response


@bp.post("/signout")
async def signout() -> Response:
    services = current_services()
    form = await request.form
    row = current_session(services)
    response = see_other("/signin?ended=1")
    if row is not None:
        check_signin_origin(services)
        expected = rules.csrf_token(row.csrf_secret)
        sent = form.get(rules.CSRF_FIELD, "") or request.headers.get(rules.CSRF_HEADER, "")
        if not hmac.compare_digest(sent.encode(), expected.encode()):
            # another site cannot end the session; the form itself always carries the token
            return await render(
                viewer(services),
                "console/error.html",
                status=403,
                code="csrf_missing" if not sent else "csrf_invalid",
                message="signing out needs the page's CSRF token; use the Sign out button",
                status_code=403,
            )
        await sign_out(services, row)
    forget_cookie(response)
    return response
