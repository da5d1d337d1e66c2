"""Console pages operators watch with: the audit log (filters, CSV and JSON export), the live
feed (and publishing a platform event), the server's status (readiness and the bench).

    GET /audit                   filters: plugin, property, type, since (UTC), limit, before
    GET /audit/export.csv        the same filters, every matching row up to EXPORT_MAX
    GET /audit/export.json
    GET /feed                    the live feed as it comes (console.js), publish an event
    GET /status                  readiness checks, per-plugin performance and tier

The audit filters are the API's (`GET /api/audit`), checked the same way: a property manager
reads the log of one of its properties at a time.
"""

from __future__ import annotations

import csv
import io
import math
import time
from calendar import timegm
from collections.abc import Mapping
from typing import Any
from urllib.parse import quote

import msgspec
from quart import Blueprint, Response, request

from ...errors import BadRequest, Forbidden
from ...security.operators import AUDIT, EVENTS, PROPERTY_SCOPED, READ, require
from ...store import records
from .. import observe
from ..app import current_services
from ..params import AUDIT_TYPE, limit, query_id, query_int, query_match, query_plugin
from . import render, see_other, views
from .auth import Viewer, page

bp = Blueprint("console_watch", __name__)

AUDIT_PAGE = 100
EXPORT_MAX = 10_000
CSV_FIELDS = ("id", "at", "actor", "type", "plugin", "property", "risk_score", "detail")
FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def parse_since(raw: str | None) -> float | None:
    """`since` as the form sends it (`YYYY-MM-DDTHH:MM[:SS]`, UTC) or a UNIX time."""
    if raw is None or not raw.strip():
        return None
    text = raw.strip()[:40]
    for pattern in ("%Y-%m-%dT%H:%M:%S", "%Y-%m-%dT%H:%M", "%Y-%m-%d"):
        try:
            return float(timegm(time.strptime(text, pattern)))
        except ValueError:
            continue
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not math.isfinite(value) or value < 0:
        raise BadRequest(
            "query parameter 'since' must be a UTC date and time (2026-01-31T08:00)",
            {"parameter": "since", "value": text},
        )
    return value


def audit_filters(args: Mapping[str, str], op: records.OperatorRow) -> dict[str, Any]:
    """The API's audit filters from the page's query (empty fields are no filter)."""
    property_id = query_id(args, "property") if args.get("property") else None
    if op.role in PROPERTY_SCOPED and property_id is None:
        raise Forbidden("a property manager reads the audit log of one of its properties")
    require(op, AUDIT, property_id)
    return {
        "plugin": query_plugin(args) if args.get("plugin") else None,
        "property_id": property_id,
        "type_": query_match(args, "type", AUDIT_TYPE) if args.get("type") else None,
        "since": parse_since(args.get("since")),
    }


def csv_cell(value: object) -> str:
    """A cell a spreadsheet shows as text, never runs as a formula."""
    text = value if isinstance(value, str) else str(value)
    return "'" + text if text.startswith(FORMULA_START) else text


@bp.get("/audit")
@page(AUDIT)
async def audit(view: Viewer) -> Response:
    args = request.args
    op = view.operator
    if op.role in PROPERTY_SCOPED and not args.get("property") and op.properties:
        return see_other(f"/audit?property={quote(sorted(op.properties)[0])}")
    filters = audit_filters(args, op)
    before = query_int(args, "before", None, 1, 2**63 - 1)
    page_size = limit(args, AUDIT_PAGE)
    found = records.audit_page(current_services().db, before=before, limit=page_size, **filters)
    query = {k: v for k, v in args.items() if k in {"plugin", "property", "type", "since"} and v}
    return await render(
        view,
        "console/watch/audit.html",
        rows=found.rows,
        next_before=found.next_before,
        query=query,
        limit=page_size,
        properties=views.visible_properties(current_services(), view.operator),
    )


def _export_rows(filters: dict[str, Any]) -> list[records.AuditRow]:
    rows: list[records.AuditRow] = []
    before: int | None = None
    db = current_services().db
    while len(rows) < EXPORT_MAX:
        found = records.audit_page(db, before=before, limit=EXPORT_MAX - len(rows), **filters)
        rows.extend(found.rows)
        if found.next_before is None:
            break
        before = found.next_before
    return rows


def _filename(extension: str) -> str:
    return f"pentarun-audit-{time.strftime('%Y%m%dT%H%M%SZ', time.gmtime())}.{extension}"


@bp.get("/audit/export.csv")
@page(AUDIT)
async def export_csv(view: Viewer) -> Response:
    rows = _export_rows(audit_filters(request.args, view.operator))
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(CSV_FIELDS)
    for row in rows:
        at = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(row.at))
        detail = msgspec.json.encode(row.detail).decode()
        values = (row.id, at, row.actor, row.type, row.plugin, row.property, row.risk_score)
        writer.writerow([csv_cell(v) for v in (*values, detail)])
    return Response(
        out.getvalue(),
        content_type="text/csv; charset=utf-8",
        headers={
            "Content-Disposition": f'attachment; filename="{_filename("csv")}"',
            "Cache-Control": "no-store",
        },
    )


@bp.get("/audit/export.json")
@page(AUDIT)
async def export_json(view: Viewer) -> Response:
    rows = _export_rows(audit_filters(request.args, view.operator))
    return Response(
        msgspec.json.encode({"events": rows, "exported_at": time.time()}),
        content_type="application/json",
        headers={
            "Content-Disposition": f'attachment; filename="{_filename("json")}"',
            "Cache-Control": "no-store",
        },
    )


@bp.get("/feed")
@page(READ)
async def feed(view: Viewer) -> Response:
    services = current_services()
    publishable = [
        p for p in views.visible_properties(services, view.operator) if view.can(EVENTS, p.id)
    ]
    return await render(view, "console/watch/feed.html", publishable=publishable)


@bp.get("/status")
@page(READ)
async def status(view: Viewer) -> Response:
    services = current_services()
    ready, checks = observe.readiness(services)
    return await render(
        view,
        "console/watch/status.html",
        ready=ready,
        checks=checks,
        bench=observe.bench(services),
        thresholds=services.config.bench,
    )
