"""Admin API (thin: parse, authorize, call, render). Errors become JSON in one handler.

Every route but /healthz, /readyz and /metrics needs an operator bearer token.
"""

from __future__ import annotations

import logging
import re
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from functools import wraps
from typing import TYPE_CHECKING, Any, TypeVar

import msgspec
import trio
from jsonschema import Draft202012Validator
from quart import Response, request
from quart_trio import QuartTrio
from werkzeug.exceptions import HTTPException

from ..errors import (
    BadRequest,
    Conflict,
    Forbidden,
    NotFound,
    PentarunError,
    Unprocessable,
    WorkerUnavailable,
)
from ..security import ha_keys
from ..security.operators import (
    ASSIGN,
    AUDIT,
    CALL,
    CAMERAS,
    EVENTS,
    HA_KEYS,
    MANAGE_PLUGINS,
    OPERATORS,
    PERMISSIONS,
    PROPERTIES,
    PROPERTY_SCOPED,
    READ,
    ROLES,
    authenticate,
    can_see_property,
    hash_token,
    require,
)
from ..security.operators import (
    create as create_operator_token,
)
from ..store import records
from . import observe
from .http import drain_unread_bodies, reply_response

if TYPE_CHECKING:
    from ..runtime import Services

log = logging.getLogger(__name__)

S = TypeVar("S")
Handler = Callable[..., Awaitable[Any]]


class CallRequest(msgspec.Struct, forbid_unknown_fields=True):
    handler: str
    property: str
    params: dict[str, Any] = {}


class PropertyRequest(msgspec.Struct, forbid_unknown_fields=True):
    id: str
    name: str


class OperatorRequest(msgspec.Struct, forbid_unknown_fields=True):
    name: str
    role: str
    properties: list[str] = []


class CameraSource(msgspec.Struct, forbid_unknown_fields=True):
    kind: str


class CameraRequest(msgspec.Struct, forbid_unknown_fields=True):
    id: str
    name: str
    source: CameraSource = msgspec.field(default_factory=lambda: CameraSource("demo"))
    has_audio: bool = False


class HaKeyRequest(msgspec.Struct, forbid_unknown_fields=True):
    name: str = ""


CAMERA_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
CAMERA_KINDS = ("demo",)


class EventRequest(msgspec.Struct, forbid_unknown_fields=True):
    type: str
    property: str
    data: dict[str, Any] = {}


class ApproveRequest(msgspec.Struct, forbid_unknown_fields=True):
    digest: str


class ReasonRequest(msgspec.Struct, forbid_unknown_fields=True):
    reason: str = ""


class PropertiesRequest(msgspec.Struct, forbid_unknown_fields=True):
    properties: list[str] = []


FEED_KEEPALIVE_S = 15.0
ZIP_TYPES = ("application/zip", "application/x-zip-compressed", "application/octet-stream")


async def package_bytes() -> bytes:
    """The uploaded zip: a raw application/zip body or the multipart field "package"."""
    content_type = (request.mimetype or "").lower()
    if content_type == "multipart/form-data":
        files = await request.files
        upload = files.get("package")
        if upload is None:
            raise BadRequest('multipart uploads carry the zip in the field "package"')
        data: bytes = upload.read()
        return data
    if content_type in ZIP_TYPES:
        body = await request.get_data(as_text=False)
        return body if isinstance(body, bytes) else body.encode()
    raise BadRequest(
        'upload a zip as an application/zip body or as the multipart field "package"',
        {"content_type": content_type},
    )


async def parse_body(kind: type[S]) -> S:
    body = await request.get_data()
    try:
        return msgspec.json.decode(body or b"{}", type=kind)
    except msgspec.DecodeError as exc:
        raise BadRequest(f"request body is not valid JSON: {exc}") from exc
    except msgspec.ValidationError as exc:
        raise BadRequest(f"invalid request body: {exc}") from exc


def json_response(data: Any, status: int = 200) -> Response:
    return Response(msgspec.json.encode(data), status=status, content_type="application/json")


def _require_each(op: records.OperatorRow, properties: list[str]) -> None:
    """Per-property actions need the permission for every property named; none means all."""
    if not properties:
        require(op, MANAGE_PLUGINS)
    for pid in properties:
        require(op, ASSIGN, pid)


def create_admin_app(services: Services) -> QuartTrio:
    app = QuartTrio("pentarun.admin")
    app.config["MAX_CONTENT_LENGTH"] = services.config.install.max_package_bytes + 1024 * 1024
    drain_unread_bodies(app)
    db, registry, supervisor = services.db, services.registry, services.supervisor
    installs = services.installs

    def plugin_view(key: str) -> dict[str, Any]:
        """What the detail route shows: the plugin, its worker, and its install jobs."""
        return {**registry.detail(key), **installs.describe(key)}

    def operator(permission: str) -> Callable[[Handler], Handler]:
        """Require an operator token whose role has `permission`; the route gets it as `op`.

        Routes acting on one property also call `require(op, permission, pid)`.
        """

        def wrap(handler: Handler) -> Handler:
            @wraps(handler)
            async def checked(**kwargs: Any) -> Any:
                op = authenticate(db, request.headers.get("Authorization"))
                if permission not in PERMISSIONS.get(op.role, frozenset()):
                    require(op, permission)  # raises Forbidden with the reason
                return await handler(op=op, **kwargs)

            return checked

        return wrap

    @app.errorhandler(PentarunError)
    async def pentarun_error(exc: PentarunError) -> Response:
        response = json_response(exc.to_json(), exc.http_status)
        if exc.http_status == 401:
            response.headers["WWW-Authenticate"] = 'Bearer realm="pentarun"'
        return response

    @app.errorhandler(HTTPException)
    async def http_error(exc: HTTPException) -> Response:
        code = (exc.name or "error").lower().replace(" ", "_")
        body = {"error": {"code": code, "message": exc.description or code, "details": {}}}
        return json_response(body, exc.code or 500)

    @app.errorhandler(Exception)
    async def unexpected(exc: Exception) -> Response:
        log.exception("unhandled error in admin API")
        body = {"error": {"code": "internal_error", "message": "internal error", "details": {}}}
        return json_response(body, 500)

    @app.get("/healthz")
    async def healthz() -> Response:
        return json_response({"status": "ok"})

    @app.get("/readyz")
    async def readyz() -> Response:
        ready = services.ready.is_set()
        return json_response({"ready": ready}, 200 if ready else 503)

    @app.get("/metrics")
    async def prometheus() -> Response:
        return Response(observe.metrics(services), content_type="text/plain; version=0.0.4")

    @app.get("/api/bench")
    @operator(READ)
    async def bench(op: records.OperatorRow) -> Response:
        return json_response(
            {"plugins": observe.bench(services), "thresholds": services.config.bench}
        )

    @app.get("/api/feed")
    @operator(READ)
    async def feed(op: records.OperatorRow) -> Response:
        async def events() -> AsyncIterator[bytes]:
            yield b": connected\n\n"
            async with services.feed.subscribe() as subscription:
                while True:
                    with trio.move_on_after(FEED_KEEPALIVE_S) as idle:
                        event = await subscription.receive()
                    if idle.cancelled_caught:
                        yield b": keep-alive\n\n"
                        continue
                    prop = event.get("property") or ""
                    if op.role in PROPERTY_SCOPED and prop not in op.properties:
                        continue
                    yield (
                        f"event: {event['type']}\ndata: ".encode()
                        + msgspec.json.encode(event)
                        + b"\n\n"
                    )

        response = Response(
            events(), content_type="text/event-stream", headers={"Cache-Control": "no-store"}
        )
        response.timeout = None
        return response

    @app.get("/api/plugins")
    @operator(READ)
    async def list_plugins(op: records.OperatorRow) -> Response:
        rows = records.list_plugins(db)
        return json_response({"plugins": [registry.summary(row) for row in rows]})

    @app.get("/api/plugins/<key>")
    @operator(READ)
    async def plugin_detail(op: records.OperatorRow, key: str) -> Response:
        return json_response(plugin_view(key))

    @app.post("/api/plugins")
    @operator(MANAGE_PLUGINS)
    async def upload(op: records.OperatorRow) -> Response:
        row = await installs.upload(await package_bytes(), f"operator:{op.name}")
        return json_response(plugin_view(row.plugin_key), 202)

    @app.post("/api/plugins/<key>/approve")
    @operator(MANAGE_PLUGINS)
    async def approve(op: records.OperatorRow, key: str) -> Response:
        body = await parse_body(ApproveRequest)
        await installs.approve(key, body.digest, f"operator:{op.name}")
        return json_response(installs.describe(key))

    @app.post("/api/plugins/<key>/reject")
    @operator(MANAGE_PLUGINS)
    async def reject(op: records.OperatorRow, key: str) -> Response:
        body = await parse_body(ReasonRequest)
        await installs.reject(key, f"operator:{op.name}", body.reason or "rejected by operator")
        return json_response(installs.describe(key))

    @app.post("/api/plugins/<key>/tests")
    @operator(MANAGE_PLUGINS)
    async def run_tests(op: records.OperatorRow, key: str) -> Response:
        return json_response({"run_id": await installs.run_tests(key, f"operator:{op.name}")}, 202)

    @app.get("/api/plugins/<key>/tests")
    @operator(READ)
    async def list_test_runs(op: records.OperatorRow, key: str) -> Response:
        registry.plugin(key)
        return json_response({"runs": records.test_runs(db, key)})

    @app.get("/api/plugins/<key>/tests/<run_id>")
    @operator(READ)
    async def get_test_run(op: records.OperatorRow, key: str, run_id: str) -> Response:
        run = records.test_run(db, run_id)
        if run is None or run.plugin_key != key:
            raise NotFound(f"no test run {run_id!r} of {key!r}")
        return json_response(run)

    @app.post("/api/plugins/<key>/enable")
    @operator(ASSIGN)
    async def enable(op: records.OperatorRow, key: str) -> Response:
        body = await parse_body(PropertiesRequest)
        _require_each(op, body.properties)
        await installs.enable(key, body.properties, f"operator:{op.name}")
        return json_response(plugin_view(key))

    @app.post("/api/plugins/<key>/disable")
    @operator(ASSIGN)
    async def disable(op: records.OperatorRow, key: str) -> Response:
        body = await parse_body(PropertiesRequest)
        _require_each(op, body.properties)
        await installs.disable(key, body.properties, f"operator:{op.name}")
        return json_response(plugin_view(key))

    @app.post("/api/plugins/<key>/quarantine")
    @operator(MANAGE_PLUGINS)
    async def quarantine(op: records.OperatorRow, key: str) -> Response:
        body = await parse_body(ReasonRequest)
        reason = body.reason or f"quarantined by operator {op.name}"
        await installs.quarantine(key, reason, f"operator:{op.name}")
        return json_response(plugin_view(key))

    @app.post("/api/plugins/<key>/release")
    @operator(MANAGE_PLUGINS)
    async def release(op: records.OperatorRow, key: str) -> Response:
        await installs.release(key, f"operator:{op.name}")
        return json_response(plugin_view(key), 202)

    @app.delete("/api/plugins/<key>")
    @operator(MANAGE_PLUGINS)
    async def uninstall(op: records.OperatorRow, key: str) -> Response:
        await installs.uninstall(key, f"operator:{op.name}")
        return json_response({"plugin": key, "uninstalled": True})

    @app.post("/api/plugins/<key>/call")
    @operator(CALL)
    async def call_plugin(op: records.OperatorRow, key: str) -> Response:
        body = await parse_body(CallRequest)
        require(op, CALL, body.property)
        plugin = registry.plugin(key)
        actor = supervisor.directory.get(key)
        if actor is None:
            raise WorkerUnavailable(
                f"plugin {key!r} is {plugin.state} and has no worker"
                + ("; enable it first" if plugin.state in ("VERIFIED", "DISABLED") else ""),
                {"state": plugin.state},
            )
        records.audit(
            db,
            f"operator:{op.name}",
            "plugin.call",
            plugin=key,
            property_id=body.property,
            detail={"handler": body.handler},
        )
        reply = await actor.call(body.handler, body.property, body.params)
        return reply_response(reply, wrap_json=True)

    @app.put("/api/plugins/<key>/properties/<pid>")
    @operator(ASSIGN)
    async def assign(op: records.OperatorRow, key: str, pid: str) -> Response:
        require(op, ASSIGN, pid)
        await registry.assign(key, pid)
        records.audit(
            db, f"operator:{op.name}", "plugin.property_assigned", plugin=key, property_id=pid
        )
        return json_response({"plugin": key, "property": pid, "assigned": True})

    @app.delete("/api/plugins/<key>/properties/<pid>")
    @operator(ASSIGN)
    async def unassign(op: records.OperatorRow, key: str, pid: str) -> Response:
        require(op, ASSIGN, pid)
        await registry.unassign(key, pid)
        records.audit(
            db, f"operator:{op.name}", "plugin.property_unassigned", plugin=key, property_id=pid
        )
        return json_response({"plugin": key, "property": pid, "assigned": False})

    @app.get("/api/plugins/<key>/config")
    @operator(READ)
    async def get_config(op: records.OperatorRow, key: str) -> Response:
        row = registry.plugin(key)
        return json_response(
            {
                "config": records.get_config(db, key),
                "schema": row.manifest.get("config_schema", {"type": "object"}),
            }
        )

    @app.put("/api/plugins/<key>/config")
    @operator(MANAGE_PLUGINS)
    async def put_config(op: records.OperatorRow, key: str) -> Response:
        row = registry.plugin(key)
        raw = await request.get_data(as_text=False)
        try:
            config = msgspec.json.decode(raw or b"null")
        except msgspec.DecodeError as exc:
            raise BadRequest(f"the configuration is not valid JSON: {exc}") from None
        schema = row.manifest.get("config_schema", {"type": "object"})
        problems = [
            {"path": "/".join(str(p) for p in error.absolute_path), "message": error.message}
            for error in Draft202012Validator(schema).iter_errors(config)
        ]
        if not isinstance(config, dict):
            problems.insert(0, {"path": "", "message": "the configuration must be an object"})
        if problems:
            raise Unprocessable(
                f"the configuration does not match config_schema: {len(problems)} problem(s)",
                {"problems": problems},
            )
        await records.set_config(db, key, config)
        actor = supervisor.directory.get(key)
        if actor is not None:
            actor.push_config(config)
        records.audit(
            db,
            f"operator:{op.name}",
            "plugin.config_changed",
            plugin=key,
            detail={"config": config},
        )
        return json_response({"config": config})

    @app.get("/api/plugins/<key>/events")
    @operator(READ)
    async def plugin_events(op: records.OperatorRow, key: str) -> Response:
        registry.plugin(key)
        return json_response({"events": records.list_events(db, key)})

    @app.get("/api/plugins/<key>/health")
    @operator(READ)
    async def plugin_health(op: records.OperatorRow, key: str) -> Response:
        registry.plugin(key)
        return json_response({"checks": records.list_health(db, key)})

    @app.get("/api/plugins/<key>/logs")
    @operator(READ)
    async def plugin_logs(op: records.OperatorRow, key: str) -> Response:
        registry.plugin(key)
        actor = supervisor.directory.get(key)
        return json_response({"lines": list(actor.logs) if actor else []})

    @app.post("/api/events")
    @operator(EVENTS)
    async def publish_event(op: records.OperatorRow) -> Response:
        body = await parse_body(EventRequest)
        require(op, EVENTS, body.property)
        visible_property(op, body.property)
        delivered = supervisor.events.publish(
            body.type, body.property, body.data, source=f"operator:{op.name}"
        )
        records.audit(
            db,
            f"operator:{op.name}",
            "event.published",
            property_id=body.property,
            detail={"type": body.type, "delivered": delivered},
        )
        return json_response(
            {"type": body.type, "property": body.property, "delivered": delivered}, 202
        )

    @app.get("/api/audit")
    @operator(AUDIT)
    async def audit_log(op: records.OperatorRow) -> Response:
        args = request.args
        since = args.get("since")
        try:
            since_value = float(since) if since is not None else None
            limit = min(int(args.get("limit", 500)), 5000)
        except ValueError:
            raise BadRequest("since is a UNIX time in seconds and limit an integer") from None
        property_id = args.get("property")
        if op.role in PROPERTY_SCOPED and property_id is None:
            raise Forbidden("a property manager reads the audit log of one of its properties")
        require(op, AUDIT, property_id)
        rows = records.list_audit(
            db,
            plugin=args.get("plugin"),
            property_id=property_id,
            type_=args.get("type"),
            since=since_value,
            limit=limit,
        )
        return json_response({"events": rows})

    @app.post("/api/operators")
    @operator(OPERATORS)
    async def create_operator(op: records.OperatorRow) -> Response:
        body = await parse_body(OperatorRequest)
        if body.role not in ROLES:
            raise BadRequest(f"role must be one of {list(ROLES)}", {"role": body.role})
        if body.role == "root" and op.role != "root":
            raise Forbidden("only root creates root operators")
        if not body.name.strip():
            raise BadRequest("an operator needs a name")
        if body.role == "property_manager" and not body.properties:
            raise BadRequest("a property manager needs at least one property")
        for pid in body.properties:
            if records.get_property(db, pid) is None:
                raise NotFound(f"no property {pid!r}", {"property": pid})
        row, token = await create_operator_token(db, body.name, body.role, body.properties)
        records.audit(
            db,
            f"operator:{op.name}",
            "operator.created",
            detail={"id": row.id, "name": row.name, "role": row.role},
        )
        return json_response({**msgspec.to_builtins(row), "token": token}, 201)

    @app.get("/api/operators")
    @operator(OPERATORS)
    async def list_operators(op: records.OperatorRow) -> Response:
        return json_response({"operators": records.list_operators(db)})

    @app.get("/api/operators/<operator_id>")
    @operator(OPERATORS)
    async def get_operator(op: records.OperatorRow, operator_id: str) -> Response:
        row = records.get_operator(db, operator_id)
        if row is None:
            raise NotFound(f"no operator {operator_id!r}")
        return json_response(row)

    @app.delete("/api/operators/<operator_id>")
    @operator(OPERATORS)
    async def delete_operator(op: records.OperatorRow, operator_id: str) -> Response:
        row = records.get_operator(db, operator_id)
        if row is None:
            raise NotFound(f"no operator {operator_id!r}")
        if row.id == op.id:
            raise Conflict("operators cannot revoke themselves")
        if row.role == "root" and op.role != "root":
            raise Forbidden("only root revokes root operators")
        await records.revoke_operator(db, operator_id)
        records.audit(db, f"operator:{op.name}", "operator.revoked", detail={"id": operator_id})
        return json_response({"id": operator_id, "revoked": True})

    def visible_property(op: records.OperatorRow, pid: str) -> records.PropertyRow:
        row = records.get_property(db, pid)
        if row is None or not can_see_property(op, pid):
            raise NotFound(f"no property {pid!r}", {"property": pid})
        return row

    @app.post("/api/properties/<pid>/cameras")
    @operator(CAMERAS)
    async def create_camera(op: records.OperatorRow, pid: str) -> Response:
        visible_property(op, pid)
        require(op, CAMERAS, pid)
        body = await parse_body(CameraRequest)
        if not CAMERA_ID.match(body.id):
            raise BadRequest(f"camera id must match {CAMERA_ID.pattern}")
        if body.source.kind not in CAMERA_KINDS:
            raise BadRequest(f"camera source kind must be one of {list(CAMERA_KINDS)}")
        if records.get_camera(db, pid, body.id) is not None:
            raise Conflict(f"property {pid!r} already has a camera {body.id!r}")
        row = await records.create_camera(
            db,
            pid,
            body.id,
            name=body.name,
            source=msgspec.to_builtins(body.source),
            has_audio=body.has_audio,
        )
        records.audit(
            db, f"operator:{op.name}", "camera.created", property_id=pid, detail={"camera": body.id}
        )
        return json_response(row, 201)

    @app.get("/api/properties/<pid>/cameras")
    @operator(READ)
    async def list_cameras(op: records.OperatorRow, pid: str) -> Response:
        visible_property(op, pid)
        return json_response({"cameras": records.cameras_of(db, pid)})

    @app.post("/api/properties/<pid>/ha-keys")
    @operator(HA_KEYS)
    async def create_ha_key(op: records.OperatorRow, pid: str) -> Response:
        visible_property(op, pid)
        require(op, HA_KEYS, pid)
        body = await parse_body(HaKeyRequest)
        key = ha_keys.new_key()
        row = await records.create_ha_key(db, uuid.uuid4().hex, pid, hash_token(key), body.name)
        records.audit(
            db,
            f"operator:{op.name}",
            "ha_key.created",
            property_id=pid,
            detail={"id": row.id, "name": row.name},
        )
        return json_response({"id": row.id, "key": key, "property_id": pid, "name": row.name}, 201)

    @app.get("/api/properties/<pid>/ha-keys")
    @operator(READ)
    async def list_ha_keys(op: records.OperatorRow, pid: str) -> Response:
        visible_property(op, pid)
        return json_response({"keys": records.ha_keys_of(db, pid)})

    @app.delete("/api/ha-keys/<key_id>")
    @operator(HA_KEYS)
    async def revoke_ha_key(op: records.OperatorRow, key_id: str) -> Response:
        row = records.get_ha_key(db, key_id)
        if row is None or not can_see_property(op, row.property_id):
            raise NotFound(f"no key {key_id!r}")
        require(op, HA_KEYS, row.property_id)
        await records.revoke_ha_key(db, key_id)
        records.audit(
            db,
            f"operator:{op.name}",
            "ha_key.revoked",
            property_id=row.property_id,
            detail={"id": key_id},
        )
        return json_response({"id": key_id, "revoked": True})

    @app.post("/api/properties")
    @operator(PROPERTIES)
    async def create_property(op: records.OperatorRow) -> Response:
        body = await parse_body(PropertyRequest)
        if records.get_property(db, body.id) is not None:
            raise Conflict(f"property {body.id!r} exists")
        row = await records.create_property(db, body.id, body.name)
        records.audit(db, f"operator:{op.name}", "property.created", property_id=body.id)
        return json_response(row, 201)

    @app.get("/api/properties")
    @operator(READ)
    async def list_properties(op: records.OperatorRow) -> Response:
        rows = [p for p in records.list_properties(db) if can_see_property(op, p.id)]
        return json_response({"properties": rows})

    @app.get("/api/properties/<pid>")
    @operator(READ)
    async def get_property(op: records.OperatorRow, pid: str) -> Response:
        row = records.get_property(db, pid)
        if row is None or not can_see_property(op, pid):
            raise NotFound(f"no property {pid!r}")
        return json_response(row)

    return app
