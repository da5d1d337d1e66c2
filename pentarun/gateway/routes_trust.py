"""Admin routes of the trust store: the publisher keys plugin packages may be signed by.

Root and admin only (`trust.manage`). The install service owns the store (a key added or
removed is honoured at once) and audits every change (`trust.key_added`, `trust.key_removed`).
"""

from __future__ import annotations

from typing import Annotated

import msgspec
import trio
from quart import Blueprint, Response

from ..security.operators import TRUST
from ..store import records
from .app import actor_name, current_services, json_response, operator, parse_body
from .params import TrustKeyId, trust_key_id

bp = Blueprint("trust", __name__)


class TrustedKeyRequest(msgspec.Struct, forbid_unknown_fields=True):
    key_id: TrustKeyId  # checked here, before the trust store: it names a file
    # base64 of the raw 32-byte Ed25519 key (44 characters), or its PEM
    public_key: Annotated[str, msgspec.Meta(min_length=1, max_length=1024)]


@bp.get("/api/trust/keys")
@operator(TRUST)
async def list_trusted_keys(op: records.OperatorRow) -> Response:
    # reads the trust directory (a few small files): off the trio thread
    keys = await trio.to_thread.run_sync(current_services().installs.trusted_keys)
    return json_response({"keys": keys})


@bp.post("/api/trust/keys")
@operator(TRUST)
async def add_trusted_key(op: records.OperatorRow) -> Response:
    body = await parse_body(TrustedKeyRequest)
    added = await current_services().installs.add_trusted_key(
        body.key_id, body.public_key, actor_name(op)
    )
    return json_response(added, 201)


@bp.delete("/api/trust/keys/<key_id>")
@operator(TRUST)
async def remove_trusted_key(op: records.OperatorRow, key_id: str) -> Response:
    key_id = trust_key_id(key_id)
    await current_services().installs.remove_trusted_key(key_id, actor_name(op))
    return json_response({"key_id": key_id, "removed": True})
