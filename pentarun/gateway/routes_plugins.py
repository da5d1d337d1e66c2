"""Admin routes of a plugin's life: upload, approval, tests, enable/disable, assignment,
quarantine, uninstall. The install service (packages/service.py) owns every rule; these
routes parse, authorize, call it and render."""

from __future__ import annotations

from typing import Annotated, Any

import msgspec
from quart import Blueprint, Response, request
from werkzeug.exceptions import RequestEntityTooLarge

from ..errors import BadRequest, NotFound
from ..packages.catalog import newest
from ..security.operators import ASSIGN, MANAGE_PLUGINS, READ, require
from ..store import records
from .app import (
    Services,
    actor_name,
    body_limit,
    current_services,
    json_response,
    operator,
    parse_body,
)
from .http import payload_too_large, read_body
from .params import (
    MAX_DIGEST,
    MAX_TEXT,
    IdList,
    Text,
    limit,
    plugin_key,
    query_bool,
    query_float,
    query_plugin,
    resource_id,
    token_id,
)

bp = Blueprint("plugins", __name__)

ZIP_TYPES = ("application/zip", "application/x-zip-compressed", "application/octet-stream")
PLUGINS_PAGE = 200
MAX_GATE_NAME = 64


class ApproveRequest(msgspec.Struct, forbid_unknown_fields=True):
    digest: Annotated[str, msgspec.Meta(max_length=MAX_DIGEST)]


class ReasonRequest(msgspec.Struct, forbid_unknown_fields=True):
    reason: Text = ""


class PropertiesRequest(msgspec.Struct, forbid_unknown_fields=True):
    properties: IdList = []


def plugin_view(services: Services, key: str) -> dict[str, Any]:
    """What the detail route shows: the plugin, its worker, and its install jobs (rated
    with the operator's egress grants to it)."""
    grants = records.egress_grants(services.db, key)
    return {**services.registry.detail(key, grants), **services.installs.describe(key, grants)}


def require_each(op: records.OperatorRow, properties: list[str]) -> None:
    """Per-property actions need the permission for every property named; none means all."""
    if not properties:
        require(op, MANAGE_PLUGINS)
    for pid in properties:
        require(op, ASSIGN, pid)


async def package_bytes() -> bytes:
    """The uploaded zip: a raw application/zip body or the multipart field "package"."""
    content_type = (request.mimetype or "").lower()
    if content_type == "multipart/form-data":
        try:
            files = await request.files
        except RequestEntityTooLarge:
            raise payload_too_large() from None
        upload = files.get("package")
        if upload is None:
            raise BadRequest('multipart uploads carry the zip in the field "package"')
        data: bytes = upload.read()
        return data
    if content_type in ZIP_TYPES:
        return await read_body()
    raise BadRequest(
        'upload a zip as an application/zip body or as the multipart field "package"',
        {"content_type": content_type[:100]},
    )


@bp.get("/api/plugins")
@operator(READ)
async def list_plugins(op: records.OperatorRow) -> Response:
    services = current_services()
    after = query_plugin(request.args, "after") or ""
    page = limit(request.args, PLUGINS_PAGE)
    rows = records.list_plugins(services.db, after=after, limit=page)
    return json_response(
        {
            "plugins": [
                services.registry.summary(row, records.egress_grants(services.db, row.key))
                for row in rows
            ],
            "next_after": rows[-1].key if len(rows) == page else None,
        }
    )


@bp.get("/api/plugins/<key>")
@operator(READ)
async def plugin_detail(op: records.OperatorRow, key: str) -> Response:
    return json_response(plugin_view(current_services(), plugin_key(key)))


@bp.post("/api/plugins")
@body_limit("package")
@operator(MANAGE_PLUGINS)
async def upload(op: records.OperatorRow) -> Response:
    services = current_services()
    row = await services.installs.upload(await package_bytes(), actor_name(op))
    return json_response(plugin_view(services, row.plugin_key), 202)


class UpgradeRequest(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    version: Annotated[str, msgspec.Meta(max_length=64)] = ""  # "": the newest


@bp.get("/api/catalog")
@operator(READ)
async def catalog(op: records.OperatorRow) -> Response:
    """What the catalog offers, and for each installed plugin whether it is newer."""
    services = current_services()
    catalog = services.installs.catalog
    entries = await catalog.rescan()
    installed = {r.key: r.version for r in records.list_plugins(services.db)}
    listed = []
    for entry in sorted(entries, key=lambda e: (e.key, e.file)):
        current = installed.get(entry.key)
        newer = current is not None and newest([entry], entry.key, current) is not None
        listed.append({**msgspec.to_builtins(entry), "installed_version": current, "newer": newer})
    return json_response({"configured": catalog.configured, "entries": listed})


@bp.post("/api/plugins/<key>/upgrade")
@operator(MANAGE_PLUGINS)
async def upgrade(op: records.OperatorRow, key: str) -> Response:
    """Upload the catalog's newest (or named) version of an installed plugin: the same
    pipeline as an upload (signature, gates, approval)."""
    services = current_services()
    key = plugin_key(key)
    services.registry.plugin(key)  # 404 for a plugin that is not installed
    body = await parse_body(UpgradeRequest)  # an empty body: the newest
    entry, data = await services.installs.catalog.package(key, body.version)
    row = await services.installs.upload(data, actor_name(op))
    records.audit(
        services.db,
        actor_name(op),
        "plugin.upgrade_requested",
        plugin=key,
        detail={"version": entry.version, "file": entry.file},
    )
    return json_response(plugin_view(services, row.plugin_key), 202)


@bp.post("/api/plugins/<key>/approve")
@operator(MANAGE_PLUGINS)
async def approve(op: records.OperatorRow, key: str) -> Response:
    key = plugin_key(key)
    body = await parse_body(ApproveRequest)
    services = current_services()
    await services.installs.approve(key, body.digest, actor_name(op))
    return json_response(services.installs.describe(key))


@bp.post("/api/plugins/<key>/reject")
@operator(MANAGE_PLUGINS)
async def reject(op: records.OperatorRow, key: str) -> Response:
    key = plugin_key(key)
    body = await parse_body(ReasonRequest)
    services = current_services()
    await services.installs.reject(key, actor_name(op), body.reason or "rejected by operator")
    return json_response(services.installs.describe(key))


@bp.post("/api/plugins/<key>/tests")
@operator(MANAGE_PLUGINS)
async def run_tests(op: records.OperatorRow, key: str) -> Response:
    run_id = await current_services().installs.run_tests(plugin_key(key), actor_name(op))
    return json_response({"run_id": run_id}, 202)


MAX_RUNS_PAGE = 100


def run_summary(run: records.TestRunRow) -> dict[str, Any]:
    """A test run in a list: who, when, how it ended and each gate's verdict; the cases, the
    load statistics and every detail stay on `GET .../tests/<run_id>`."""
    report = run.report
    gates = report.get("gates")
    error = report.get("error")
    return {
        "id": run.id,
        "version": run.version,
        "status": run.status,
        "started_at": run.started_at,
        "finished_at": run.finished_at,
        "ok": report.get("ok") is True,
        "gates": [
            {"gate": str(gate.get("gate", ""))[:MAX_GATE_NAME], "ok": gate.get("ok") is True}
            for gate in (gates if isinstance(gates, list) else [])
            if isinstance(gate, dict)
        ],
        **({"error": str(error)[:MAX_TEXT]} if error else {}),
    }


@bp.get("/api/plugins/<key>/tests")
@operator(READ)
async def list_test_runs(op: records.OperatorRow, key: str) -> Response:
    """Summaries (`run_summary`), newest first, `limit` (default 50, at most
    MAX_RUNS_PAGE: each row read holds its whole report) at a time; `before` = `next_before`
    pages on. The full report of one run: `GET .../tests/<run_id>`."""
    key = plugin_key(key)
    page = limit(request.args, 50, MAX_RUNS_PAGE)
    before = query_float(request.args, "before")
    services = current_services()
    services.registry.plugin(key)
    runs = records.test_runs(services.db, key, page, before)
    next_before = runs[-1].started_at if len(runs) == page else None
    return json_response({"runs": [run_summary(r) for r in runs], "next_before": next_before})


@bp.get("/api/plugins/<key>/tests/<run_id>")
@operator(READ)
async def get_test_run(op: records.OperatorRow, key: str, run_id: str) -> Response:
    key, run_id = plugin_key(key), token_id(run_id, "test run")
    run = records.test_run(current_services().db, run_id)
    if run is None or run.plugin_key != key:
        raise NotFound(f"no test run {run_id!r} of {key!r}")
    return json_response(run)


@bp.post("/api/plugins/<key>/enable")
@operator(ASSIGN)
async def enable(op: records.OperatorRow, key: str) -> Response:
    body = await parse_body(PropertiesRequest)
    require_each(op, body.properties)
    key = plugin_key(key)
    services = current_services()
    await services.installs.enable(key, body.properties, actor_name(op))
    return json_response(plugin_view(services, key))


@bp.post("/api/plugins/<key>/disable")
@operator(ASSIGN)
async def disable(op: records.OperatorRow, key: str) -> Response:
    body = await parse_body(PropertiesRequest)
    require_each(op, body.properties)
    key = plugin_key(key)
    services = current_services()
    await services.installs.disable(key, body.properties, actor_name(op))
    return json_response(plugin_view(services, key))


@bp.post("/api/plugins/<key>/quarantine")
@operator(MANAGE_PLUGINS)
async def quarantine(op: records.OperatorRow, key: str) -> Response:
    key = plugin_key(key)
    body = await parse_body(ReasonRequest)
    reason = body.reason or f"quarantined by operator {op.name}"
    services = current_services()
    await services.installs.quarantine(key, reason, actor_name(op))
    return json_response(plugin_view(services, key))


@bp.post("/api/plugins/<key>/release")
@operator(MANAGE_PLUGINS)
async def release(op: records.OperatorRow, key: str) -> Response:
    key = plugin_key(key)
    services = current_services()
    await services.installs.release(key, actor_name(op))
    return json_response(plugin_view(services, key), 202)


@bp.delete("/api/plugins/<key>")
@operator(MANAGE_PLUGINS)
async def uninstall(op: records.OperatorRow, key: str) -> Response:
    key = plugin_key(key)
    force = query_bool(request.args, "force")  # also when others depend on it (disables them)
    await current_services().installs.uninstall(key, actor_name(op), force=force)
    return json_response({"plugin": key, "uninstalled": True})


@bp.put("/api/plugins/<key>/properties/<pid>")
@operator(ASSIGN)
async def assign(op: records.OperatorRow, key: str, pid: str) -> Response:
    require(op, ASSIGN, pid)
    key, pid = plugin_key(key), resource_id(pid, "property")
    services = current_services()
    services.installs.dependencies.check_enable(key, [pid])  # its dependencies first (409)
    await services.registry.assign(key, pid)
    records.audit(
        services.db, actor_name(op), "plugin.property_assigned", plugin=key, property_id=pid
    )
    return json_response({"plugin": key, "property": pid, "assigned": True})


@bp.delete("/api/plugins/<key>/properties/<pid>")
@operator(ASSIGN)
async def unassign(op: records.OperatorRow, key: str, pid: str) -> Response:
    require(op, ASSIGN, pid)
    key, pid = plugin_key(key), resource_id(pid, "property")
    services = current_services()
    await services.registry.unassign(key, pid)
    records.audit(
        services.db, actor_name(op), "plugin.property_unassigned", plugin=key, property_id=pid
    )
    return json_response({"plugin": key, "property": pid, "assigned": False})
