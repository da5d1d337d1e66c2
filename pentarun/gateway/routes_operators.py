"""Admin routes of operators: create (the token is shown once), list, read, revoke.

The rules (roles, who may create or revoke whom) are security/operators.py's.
"""

from __future__ import annotations

from typing import Annotated

import msgspec
from quart import Blueprint, Response, request

from ..errors import NotFound
from ..security import operators
from ..security.operators import OPERATORS
from ..store import records
from .app import current_services, json_response, operator, parse_body
from .params import TOKEN_ID, IdList, Name, limit, query_match, token_id

bp = Blueprint("operators", __name__)


class OperatorRequest(msgspec.Struct, forbid_unknown_fields=True):
    name: Name
    role: Annotated[str, msgspec.Meta(max_length=32)]
    properties: IdList = []


@bp.post("/api/operators")
@operator(OPERATORS)
async def create_operator(op: records.OperatorRow) -> Response:
    body = await parse_body(OperatorRequest)
    row, token = await operators.create_by(
        current_services().db, op, body.name, body.role, body.properties
    )
    return json_response({**msgspec.to_builtins(row), "token": token}, 201)


@bp.get("/api/operators")
@operator(OPERATORS)
async def list_operators(op: records.OperatorRow) -> Response:
    """By creation, `limit` at a time; `after` = the previous page's `next_after`."""
    after = query_match(request.args, "after", TOKEN_ID) or ""
    page = limit(request.args, 1000)
    rows = records.list_operators(current_services().db, after=after, limit=page)
    next_after = rows[-1].id if len(rows) == page else None
    return json_response({"operators": rows, "next_after": next_after})


@bp.get("/api/operators/<operator_id>")
@operator(OPERATORS)
async def get_operator(op: records.OperatorRow, operator_id: str) -> Response:
    operator_id = token_id(operator_id, "operator")
    row = records.get_operator(current_services().db, operator_id)
    if row is None:
        raise NotFound(f"no operator {operator_id!r}")
    return json_response(row)


@bp.delete("/api/operators/<operator_id>")
@operator(OPERATORS)
async def delete_operator(op: records.OperatorRow, operator_id: str) -> Response:
    operator_id = token_id(operator_id, "operator")
    await operators.revoke_by(current_services().db, op, operator_id)
    return json_response({"id": operator_id, "revoked": True})
