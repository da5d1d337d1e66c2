"""The admin app through quart's test client: auth, JSON errors, properties."""

from contextlib import asynccontextmanager

import trio

from pentarun.config import load_config
from pentarun.gateway.admin import create_admin_app
from pentarun.packages.service import Installs
from pentarun.registry import Registry
from pentarun.runtime import Services
from pentarun.security.operators import ensure_root
from pentarun.security.tokens import PluginTokens
from pentarun.store.db import open_database
from pentarun.supervisor.supervisor import Supervisor


@asynccontextmanager
async def admin(tmp_path):
    config = load_config(environ={})
    async with open_database(tmp_path / "db.sqlite") as db, trio.open_nursery() as nursery:
        token = (await ensure_root(db, tmp_path)).read_text().strip()
        supervisor = Supervisor(config.supervisor, db, PluginTokens())
        await nursery.start(supervisor.run)
        installs = Installs(config, tmp_path, db, supervisor)
        await nursery.start(installs.run)
        services = Services(config, tmp_path, db, supervisor, Registry(db, supervisor), installs)
        app = create_admin_app(services)
        yield app.test_client(), {"Authorization": f"Bearer {token}"}, services
        nursery.cancel_scope.cancel()


async def test_health_routes_need_no_token_and_ready_follows_the_runtime(tmp_path):
    async with admin(tmp_path) as (client, _, services):
        assert (await client.get("/healthz")).status_code == 200
        assert (await client.get("/readyz")).status_code == 503
        services.ready.set()
        assert (await client.get("/readyz")).status_code == 200


async def test_every_api_route_needs_an_operator_token(tmp_path):
    routes = [
        ("GET", "/api/plugins"),
        ("GET", "/api/plugins/x"),
        ("POST", "/api/plugins/x/call"),
        ("GET", "/api/properties"),
        ("PUT", "/api/plugins/x/properties/p"),
        ("POST", "/api/properties"),
    ]
    async with admin(tmp_path) as (client, _, _services):
        for method, path in routes:
            response = await client.open(path, method=method)
            assert response.status_code == 401, path
            body = await response.get_json()
            assert body["error"]["code"] == "unauthorized"
        response = await client.get("/api/plugins", headers={"Authorization": "Basic abc"})
        assert response.status_code == 401


async def test_properties_and_errors_are_json(tmp_path):
    async with admin(tmp_path) as (client, auth, _):
        created = await client.post(
            "/api/properties", json={"id": "p1", "name": "One"}, headers=auth
        )
        assert created.status_code == 201
        again = await client.post("/api/properties", json={"id": "p1", "name": "One"}, headers=auth)
        assert again.status_code == 409 and (await again.get_json())["error"]["code"] == "conflict"
        bad = await client.post("/api/properties", json={"id": "p2"}, headers=auth)
        assert bad.status_code == 400
        listed = await (await client.get("/api/properties", headers=auth)).get_json()
        assert [p["id"] for p in listed["properties"]] == ["p1"]
        missing = await client.put("/api/plugins/ghost/properties/p1", headers=auth)
        assert missing.status_code == 404
        wrong_method = await client.delete("/api/properties", headers=auth)
        assert wrong_method.status_code == 405
        assert (await wrong_method.get_json())["error"]["code"] == "method_not_allowed"
