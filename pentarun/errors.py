"""One error tree for the whole runtime; each error knows its HTTP status and stable code.

    PentarunError                      500 internal_error
    ├── BadRequest                     400 bad_request
    │   └── ProtocolError              400 protocol_error   (malformed or oversized IPC frame)
    ├── Unauthorized                   401 unauthorized
    ├── Forbidden                      403 forbidden
    │   ├── PropertyNotAssigned        403 property_not_assigned
    │   ├── ScopeDenied                403 scope_denied
    │   ├── TokenInvalid               403 token_invalid
    │   ├── NotADependency             403 not_a_dependency (plugin -> plugin: undeclared callee)
    │   └── DevBuildsDisabled          403 dev_builds_disabled (install.allow_dev_builds off)
    ├── NotFound                       404 not_found
    ├── MethodNotAllowed               405 method_not_allowed
    ├── Conflict                       409 conflict
    │   ├── StoreFull                  409 store_full       (a plugin's store quota)
    │   ├── StorageFull                409 storage_full     (a plugin's storage quota)
    │   ├── DependencyNotEnabled       409 dependency_not_enabled (enable its dependencies first)
    │   └── HasDependents              409 has_dependents   (uninstall: others depend on it)
    ├── PayloadTooLarge                413 too_large
    ├── Unprocessable                  422 unprocessable    (e.g. a refused package)
    ├── RateLimited                    429 rate_limited
    ├── Busy                           429 worker_busy
    ├── RemoteError                    the worker's own error: its code and status
    ├── WorkerUnavailable              503 worker_unavailable (down, restarting, quarantined)
    │   ├── PluginQuarantined          503 plugin_quarantined (a callee that fails fast)
    │   └── WorkerCrashed              502 worker_crashed   (died with the call in flight)
    ├── BadPluginReply                 502 bad_plugin_reply (an answer HTTP cannot carry)
    └── CallTimeout                    504 call_timeout

The gateway turns any of these into `{"error": {"code", "message", "details"}}` in one place
(gateway/errorjson.py). A 503 or 429 whose details carry `retry_after_s` answers `Retry-After`.
"""

from __future__ import annotations

from typing import Any, ClassVar


class PentarunError(Exception):
    status: ClassVar[int] = 500
    code: ClassVar[str] = "internal_error"

    def __init__(self, message: str, details: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.details = details or {}

    def to_json(self) -> dict[str, Any]:
        return {
            "error": {"code": self.error_code, "message": self.message, "details": self.details}
        }

    @property
    def error_code(self) -> str:
        return self.code

    @property
    def http_status(self) -> int:
        return self.status


class BadRequest(PentarunError):
    status, code = 400, "bad_request"


class ProtocolError(BadRequest):
    code = "protocol_error"


class Unauthorized(PentarunError):
    status, code = 401, "unauthorized"


class Forbidden(PentarunError):
    status, code = 403, "forbidden"


class PropertyNotAssigned(Forbidden):
    code = "property_not_assigned"


class ScopeDenied(Forbidden):
    code = "scope_denied"


class TokenInvalid(Forbidden):
    code = "token_invalid"


class NotADependency(Forbidden):
    code = "not_a_dependency"


class DevBuildsDisabled(Forbidden):
    code = "dev_builds_disabled"


class NotFound(PentarunError):
    status, code = 404, "not_found"


class MethodNotAllowed(PentarunError):
    status, code = 405, "method_not_allowed"


class Conflict(PentarunError):
    status, code = 409, "conflict"


class StoreFull(Conflict):
    """`store.set` of a new key when the plugin holds its quota of keys in the property (a key
    it already has can still be replaced; deleting one makes room)."""

    code = "store_full"


class StorageFull(Conflict):
    """`storage.put` that would take the plugin's files (all its properties) over its quota,
    or a property over its file count; details say what is used and the limit."""

    code = "storage_full"


class DependencyNotEnabled(Conflict):
    code = "dependency_not_enabled"


class HasDependents(Conflict):
    code = "has_dependents"


class PayloadTooLarge(PentarunError):
    status, code = 413, "too_large"


class RateLimited(PentarunError):
    status, code = 429, "rate_limited"


class Unprocessable(PentarunError):
    status, code = 422, "unprocessable"


class Busy(PentarunError):
    status, code = 429, "worker_busy"


class RemoteError(PentarunError):
    """An error raised by plugin code, carried back as data and re-raised here."""

    def __init__(self, code: str, message: str, status: int = 500) -> None:
        super().__init__(message, {"plugin_error": True})
        self.remote_code = code
        self.remote_status = status if 400 <= status <= 599 else 500

    @property
    def error_code(self) -> str:
        return self.remote_code

    @property
    def http_status(self) -> int:
        return self.remote_status


class WorkerUnavailable(PentarunError):
    status, code = 503, "worker_unavailable"


class PluginQuarantined(WorkerUnavailable):
    code = "plugin_quarantined"


class WorkerCrashed(WorkerUnavailable):
    status, code = 502, "worker_crashed"


class CallTimeout(PentarunError):
    status, code = 504, "call_timeout"


class BadPluginReply(PentarunError):
    """The plugin answered with something HTTP cannot carry (a status, a stream)."""

    status, code = 502, "bad_plugin_reply"


def leaf(exc: BaseException) -> str:
    """The first real exception inside nested exception groups, as `Type: message`."""
    while isinstance(exc, BaseExceptionGroup) and exc.exceptions:
        exc = exc.exceptions[0]
    return f"{type(exc).__name__}: {exc}"
