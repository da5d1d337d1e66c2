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


MUTATING = [
    ("POST", "/api/plugins"),
    ("POST", "/api/plugins/x/approve"),
    ("POST", "/api/plugins/x/reject"),
    ("POST", "/api/plugins/x/tests"),
    ("POST", "/api/plugins/x/enable"),
    ("POST", "/api/plugins/x/disable"),
    ("POST", "/api/plugins/x/quarantine"),
    ("POST", "/api/plugins/x/release"),
    ("DELETE", "/api/plugins/x"),
    ("POST", "/api/plugins/x/call"),
    ("PUT", "/api/plugins/x/properties/p1"),
    ("DELETE", "/api/plugins/x/properties/p1"),
    ("POST", "/api/properties"),
    ("POST", "/api/operators"),
    ("DELETE", "/api/operators/x"),
]


async def make_operator(client, auth, name, role, properties=()):
    response = await client.post(
        "/api/operators",
        headers=auth,
        json={"name": name, "role": role, "properties": list(properties)},
    )
    assert response.status_code == 201, await response.get_data()
    body = await response.get_json()
    assert set(body) == {"id", "name", "role", "properties", "created_at", "token"}
    return {"Authorization": f"Bearer {body['token']}"}, body["id"]


async def test_a_viewer_cannot_change_anything(tmp_path):
    async with admin(tmp_path) as (client, auth, _):
        await client.post("/api/properties", json={"id": "p1", "name": "One"}, headers=auth)
        viewer, _ = await make_operator(client, auth, "val", "viewer")
        for method, path in MUTATING:
            response = await client.open(path, method=method, headers=viewer, json={})
            assert response.status_code == 403, (method, path)
            assert (await response.get_json())["error"]["code"] == "forbidden"
        assert (await client.get("/api/plugins", headers=viewer)).status_code == 200
        assert (await client.get("/api/properties/p1", headers=viewer)).status_code == 200
        assert (await client.get("/api/audit", headers=viewer)).status_code == 403


async def test_a_property_manager_is_confined_to_its_properties(tmp_path):
    async with admin(tmp_path) as (client, auth, _):
        for pid in ("p1", "p2"):
            await client.post("/api/properties", json={"id": pid, "name": pid}, headers=auth)
        pm, _ = await make_operator(client, auth, "pam", "property_manager", ["p1"])
        listed = await (await client.get("/api/properties", headers=pm)).get_json()
        assert [p["id"] for p in listed["properties"]] == ["p1"]
        assert (await client.get("/api/properties/p2", headers=pm)).status_code == 404
        other = await client.post(
            "/api/plugins/x/call", headers=pm, json={"handler": "h", "property": "p2"}
        )
        assert other.status_code == 403
        own = await client.post(
            "/api/plugins/x/call", headers=pm, json={"handler": "h", "property": "p1"}
        )
        assert own.status_code == 404  # allowed; the plugin just does not exist
        assert (await client.put("/api/plugins/x/properties/p2", headers=pm)).status_code == 403
        assert (await client.post("/api/plugins/x/enable", headers=pm, json={})).status_code == 403
        assert (
            await client.post(
                "/api/plugins/x/enable", headers=pm, json={"properties": ["p1", "p2"]}
            )
        ).status_code == 403
        assert (
            await client.post("/api/properties", headers=pm, json={"id": "p3", "name": "x"})
        ).status_code == 403
        assert (await client.get("/api/audit", headers=pm)).status_code == 403
        assert (
            await client.get("/api/audit", headers=pm, query_string={"property": "p1"})
        ).status_code == 200
        assert (
            await client.get("/api/audit", headers=pm, query_string={"property": "p2"})
        ).status_code == 403


async def test_operator_management(tmp_path):
    async with admin(tmp_path) as (client, root, _):
        adm, adm_id = await make_operator(client, root, "ada", "admin")
        refused = await client.post(
            "/api/operators", headers=adm, json={"name": "r2", "role": "root"}
        )
        assert refused.status_code == 403
        bad = await client.post("/api/operators", headers=adm, json={"name": "x", "role": "god"})
        assert bad.status_code == 400
        pm = await client.post(
            "/api/operators", headers=adm, json={"name": "x", "role": "property_manager"}
        )
        assert pm.status_code == 400
        viewer, viewer_id = await make_operator(client, adm, "vic", "viewer")
        names = [
            o["name"]
            for o in (await (await client.get("/api/operators", headers=adm)).get_json())[
                "operators"
            ]
        ]
        assert names == ["root", "ada", "vic"]
        assert (await client.delete(f"/api/operators/{adm_id}", headers=adm)).status_code == 409
        assert (await client.delete(f"/api/operators/{viewer_id}", headers=adm)).status_code == 200
        assert (await client.get("/api/plugins", headers=viewer)).status_code == 401
        assert (await client.get(f"/api/operators/{viewer_id}", headers=root)).status_code == 404
