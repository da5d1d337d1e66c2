"""GET/PUT /api/plugins/{key}/egress: operator grants, checked, stored, audited, shown."""

import msgspec

from pentarun.lanes.egress_policy import MAX_GRANTS
from pentarun.packages.manifest import Manifest, Security
from pentarun.store import records

from .test_admin import admin, make_operator

KEY = "camera-sync"


async def add_plugin(db, scopes=("proxy:egress",), domains=("api.example.com",)):
    manifest = Manifest(
        key=KEY,
        name="Camera sync",
        version="1.0.0",
        engine=">=0.1",
        traits=["external_service"],
        security=Security(authentication_required=True, data_classification=["internal"]),
        scopes=list(scopes),
        allowed_domains=list(domains),
    )
    await records.upsert_plugin(
        db, KEY, name=manifest.name, version="1.0.0", state="ENABLED", manifest=manifest
    )


async def test_grants_are_replaced_checked_and_audited(tmp_path):
    async with admin(tmp_path) as (client, auth, services):
        await add_plugin(services.db)
        url = f"/api/plugins/{KEY}/egress"
        empty = await (await client.get(url, headers=auth)).get_json()
        assert empty["grants"] == [] and empty["refusals"] == 0
        assert empty["scope"] is True and empty["allowed_domains"] == ["api.example.com"]
        assert empty["domain_ports"] == [80, 443]

        hosts = ["Camera-1.LAN:554", "192.168.1.0/24", "[fd00:1::5]:8080", "camera-1.lan:554"]
        response = await client.put(url, json={"hosts": hosts}, headers=auth)
        assert response.status_code == 200, await response.get_data()
        body = await response.get_json()
        assert body["grants"] == ["camera-1.lan:554", "192.168.1.0/24", "[fd00:1::5]:8080"]
        assert body["grants_updated_by"] == "operator:root"
        assert records.egress_grants(services.db, KEY) == body["grants"]

        again = await client.put(url, json={"hosts": ["192.168.1.0/24"]}, headers=auth)
        assert (await again.get_json())["grants"] == ["192.168.1.0/24"]
        await services.db.flush()
        rows = records.list_audit(services.db, type_="egress.grants_changed", plugin=KEY)
        latest, first = rows
        assert first.detail["added"] == body["grants"] and first.risk_score == 40
        assert latest.detail["removed"] == ["camera-1.lan:554", "[fd00:1::5]:8080"]
        assert latest.detail["added"] == [] and latest.risk_score == 10
        assert latest.actor == "operator:root"

        detail = await (await client.get(f"/api/plugins/{KEY}", headers=auth)).get_json()
        assert detail["egress"]["grants"] == ["192.168.1.0/24"]
        assert detail["egress"]["refusals"] == 0


async def test_a_bad_entry_is_a_400_naming_it(tmp_path):
    async with admin(tmp_path) as (client, auth, services):
        await add_plugin(services.db)
        url = f"/api/plugins/{KEY}/egress"
        for hosts, named in [
            (["ok.lan:80", "no-port.lan"], "hosts[1]"),
            (["0.0.0.0/4"], "too broad"),
            (["[::1]:99999"], "65535"),
            (["http://x.com/"], "hosts[0]"),
        ]:
            response = await client.put(url, json={"hosts": hosts}, headers=auth)
            assert response.status_code == 400, hosts
            error = (await response.get_json())["error"]
            assert named in error["message"], error
        too_many = [f"h{i}.lan:80" for i in range(MAX_GRANTS + 1)]
        assert (await client.put(url, json={"hosts": too_many}, headers=auth)).status_code == 400
        assert (await client.put(url, json={"hosts": "a:1"}, headers=auth)).status_code == 400
        assert (await client.put(url, json={"hosts": [], "x": 1}, headers=auth)).status_code == 400
        assert records.egress_grants(services.db, KEY) == []  # nothing stored by a bad PUT


async def test_only_root_and_admin_grant_and_an_unknown_plugin_is_404(tmp_path):
    async with admin(tmp_path) as (client, auth, services):
        await add_plugin(services.db)
        await client.post("/api/properties", json={"id": "p1", "name": "One"}, headers=auth)
        url = f"/api/plugins/{KEY}/egress"
        body = {"hosts": ["10.0.0.5:80"]}
        for role, props in (("viewer", ()), ("property_manager", ("p1",))):
            other, _ = await make_operator(client, auth, f"op-{role}", role, props)
            assert (await client.put(url, json=body, headers=other)).status_code == 403
            assert (await client.get(url, headers=other)).status_code == 200
        admin_op, _ = await make_operator(client, auth, "ada", "admin")
        assert (await client.put(url, json=body, headers=admin_op)).status_code == 200
        assert (await client.get(url)).status_code == 401
        for path in ("/api/plugins/ghost/egress", "/api/plugins/NOT_A_KEY/egress"):
            assert (await client.get(path, headers=auth)).status_code == 404
            assert (await client.put(path, json=body, headers=auth)).status_code == 404


async def test_a_plugin_without_the_scope_shows_it(tmp_path):
    async with admin(tmp_path) as (client, auth, services):
        await add_plugin(services.db, scopes=(), domains=())
        view = await (await client.get(f"/api/plugins/{KEY}/egress", headers=auth)).get_json()
        assert view["scope"] is False and view["allowed_domains"] == []
        records.count_egress_refusals(services.db, KEY, 3)
        await services.db.flush()
        view = await (await client.get(f"/api/plugins/{KEY}/egress", headers=auth)).get_json()
        assert view["refusals"] == 3 and view["last_refused_at"] > 0
        assert msgspec.json.decode(msgspec.json.encode(view)) == view


async def test_a_grant_lowers_the_security_rating_with_its_reason(tmp_path):
    async with admin(tmp_path) as (client, auth, services):
        await add_plugin(services.db)

        async def rating() -> dict:
            detail = await (await client.get(f"/api/plugins/{KEY}", headers=auth)).get_json()
            return detail["security_rating"]

        before = await rating()
        await client.put(
            f"/api/plugins/{KEY}/egress", json={"hosts": ["10.0.0.5:554"]}, headers=auth
        )
        after = await rating()
        assert after["score"] == before["score"] - 1
        assert "egress_grants" in {r["rule"] for r in after["reasons"]}
        listed = await (await client.get("/api/plugins", headers=auth)).get_json()
        assert listed["plugins"][0]["security_rating"]["score"] == after["score"]
