"""The admin app with its console through quart's test client: signing in, the page's CSRF
token, plugins on record."""

from __future__ import annotations

import re
from contextlib import asynccontextmanager

from pentarun.gateway.console.session import COOKIE
from pentarun.store import records

from ..test_admin import admin

MANIFEST = {
    "key": "demo",
    "name": "Demo",
    "version": "1.0.0",
    "engine": ">=0.1,<1",
    "traits": ["example"],
    "scopes": ["properties:read", "cameras:write"],
    "handlers": ["demo.echo"],
    "security": {"authentication_required": True, "data_classification": ["internal"]},
    "config_schema": {
        "type": "object",
        "properties": {
            "threshold": {"type": "integer", "minimum": 1, "maximum": 10, "title": "Threshold"},
            "secret": {"type": "string", "format": "password"},
            "mode": {"type": "string", "enum": ["fast", "slow"]},
            "on": {"type": "boolean"},
        },
        "required": ["threshold"],
    },
    "ui": {"wizard": "ui/wizard.html"},
}

CSRF = re.compile(r'<meta name="csrf-token" content="([^"]*)"')


@asynccontextmanager
async def console(tmp_path, **sections):
    """(client, root bearer headers, services)."""
    async with admin(tmp_path, **sections) as (client, auth, services):
        yield client, auth, services


async def sign_in(client, token: str) -> str:
    """Sign in with `token`; the CSRF token of the session's pages."""
    response = await client.post("/signin", form={"token": token, "next": "/"})
    assert response.status_code == 303, await response.get_data(as_text=True)
    return await csrf_of(client)


async def csrf_of(client) -> str:
    page = await client.get("/")
    assert page.status_code == 200, page.status_code
    found = CSRF.search(await page.get_data(as_text=True))
    assert found and found.group(1)
    return found.group(1)


def bearer_token(auth: dict[str, str]) -> str:
    return auth["Authorization"].split(" ", 1)[1]


async def new_operator(client, auth, name, role, properties=()) -> tuple[str, str]:
    response = await client.post(
        "/api/operators",
        headers=auth,
        json={"name": name, "role": role, "properties": list(properties)},
    )
    assert response.status_code == 201
    body = await response.get_json()
    return body["token"], body["id"]


async def plugin_on_record(services, state="VERIFIED", **changes) -> None:
    manifest = {**MANIFEST, **changes}
    await records.upsert_plugin(
        services.db,
        manifest["key"],
        name=manifest["name"],
        version=manifest["version"],
        state=state,
        manifest=manifest,
    )


def session_cookie(client) -> str | None:
    for cookie in client.cookie_jar:
        if cookie.name == COOKIE:
            return cookie.value
    return None
