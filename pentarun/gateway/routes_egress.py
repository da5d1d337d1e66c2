"""Admin routes of the egress lane: the hosts an operator grants a plugin beyond its manifest.

    GET /api/plugins/{key}/egress     grants, refused requests, the manifest's allowed domains
    PUT /api/plugins/{key}/egress     {"hosts": ["host:port" | "[v6]:port" | "cidr", ...]}

Root and admin change grants (`plugins.manage`); any operator reads them. A PUT replaces the
whole list: at most MAX_GRANTS entries, each checked (lanes/egress_policy.py `parse_grants`; a
bad one is a 400 naming its index and why), stored in canonical form, audited
(`egress.grants_changed`: added, removed, risk = the riskiest entry added) and honoured by the
proxy at once (it reads the grants on every request).
"""

from __future__ import annotations

from typing import Annotated, Any

import msgspec
from quart import Blueprint, Response

from ..lanes.egress import egress_detail
from ..lanes.egress_policy import (
    DEFAULT_PORTS,
    MAX_GRANT_TEXT,
    MAX_GRANTS,
    SCOPE,
    grant_risk,
    parse_grants,
)
from ..security.operators import MANAGE_PLUGINS, READ
from ..store import records
from .app import Services, actor_name, current_services, json_response, operator, parse_body
from .params import plugin_key

bp = Blueprint("egress", __name__)

REMOVED_ONLY_RISK = 10


class GrantsRequest(msgspec.Struct, forbid_unknown_fields=True):
    hosts: Annotated[
        list[Annotated[str, msgspec.Meta(max_length=MAX_GRANT_TEXT)]],
        msgspec.Meta(max_length=MAX_GRANTS),
    ]


def egress_view(services: Services, key: str) -> dict[str, Any]:
    row = services.registry.plugin(key)  # NotFound for an unknown plugin
    manifest = row.manifest
    return {
        "plugin": key,
        "scope": manifest is not None and SCOPE in manifest.scopes,
        "allowed_domains": list(manifest.allowed_domains) if manifest else [],
        "domain_ports": sorted(DEFAULT_PORTS),
        **egress_detail(services.db, key),
    }


@bp.get("/api/plugins/<key>/egress")
@operator(READ)
async def get_egress(op: records.OperatorRow, key: str) -> Response:
    return json_response(egress_view(current_services(), plugin_key(key)))


@bp.put("/api/plugins/<key>/egress")
@operator(MANAGE_PLUGINS)
async def put_egress(op: records.OperatorRow, key: str) -> Response:
    services = current_services()
    key = plugin_key(key)
    services.registry.plugin(key)  # 404 before the body is judged
    body = await parse_body(GrantsRequest)
    grants = parse_grants(body.hosts)
    hosts = [str(g) for g in grants]
    before = records.egress_grants(services.db, key)
    await records.set_egress_grants(services.db, key, hosts, actor_name(op))
    added = [g for g in grants if str(g) not in before]
    removed = [h for h in before if h not in hosts]
    records.audit(
        services.db,
        actor_name(op),
        "egress.grants_changed",
        plugin=key,
        risk_score=max((grant_risk(g) for g in added), default=REMOVED_ONLY_RISK),
        detail={"hosts": hosts, "added": [str(g) for g in added], "removed": removed},
    )
    return json_response(egress_view(services, key))
