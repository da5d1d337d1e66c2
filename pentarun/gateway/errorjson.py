"""The one mapping from an error to an HTTP answer, for the admin app and every listener.

    render(exc) -> Rendered(status, body, headers)

A PentarunError answers with its own status and code; a framework HTTP error (405, 413, ...)
with its status and the code our own error of that status has (413 is `too_large` whether the
framework or a route refused the body); anything else is a logged 500 that reveals nothing.
401 carries `WWW-Authenticate`; 429 and 503 carry `Retry-After` when the error knows it.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field

import msgspec

from ..errors import (
    BadRequest,
    Forbidden,
    MethodNotAllowed,
    NotFound,
    PayloadTooLarge,
    PentarunError,
    Unauthorized,
)

log = logging.getLogger(__name__)

# framework errors answer with the code of our own error of the same status
FRAMEWORK_CODES = {
    error.status: error.code
    for error in (BadRequest, Unauthorized, Forbidden, NotFound, MethodNotAllowed, PayloadTooLarge)
}


@dataclass(frozen=True)
class Rendered:
    status: int
    body: bytes
    headers: dict[str, str] = field(default_factory=dict)
    content_type: str = "application/json"


def _body(code: str, message: str, details: dict[str, object]) -> bytes:
    return msgspec.json.encode({"error": {"code": code, "message": message, "details": details}})


def render(exc: BaseException) -> Rendered:
    if isinstance(exc, PentarunError):
        headers: dict[str, str] = {}
        if exc.http_status == 401:
            headers["WWW-Authenticate"] = 'Bearer realm="pentarun"'
        retry_after = exc.details.get("retry_after_s")
        if exc.http_status in (429, 503) and isinstance(retry_after, int | float):
            headers["Retry-After"] = str(max(1, math.ceil(retry_after)))
        return Rendered(exc.http_status, _body(exc.error_code, exc.message, exc.details), headers)
    status = getattr(exc, "code", None)
    if isinstance(status, int) and 400 <= status < 600:  # werkzeug's HTTPException and kin
        name = str(getattr(exc, "name", "") or "error")
        code = FRAMEWORK_CODES.get(status) or name.lower().replace(" ", "_")
        description = str(getattr(exc, "description", "") or code)
        return Rendered(status, _body(code, description, {}))
    log.error("unhandled error", exc_info=exc)
    return Rendered(500, _body("internal_error", "internal error", {}))
