"""The admin app through quart's test client: auth, JSON errors, roles, the split routes."""

import base64
import hashlib
import threading
from contextlib import asynccontextmanager

import msgspec
import trio
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from pentarun import plugin_config
from pentarun.assembly import assemble
from pentarun.config import SecurityConfig, load_config
from pentarun.gateway.app import Services, create_admin_app
from pentarun.ipc.messages import HttpReply, Reply
from pentarun.lanes.feed import Feed
from pentarun.packages.manifest import Manifest, Security
from pentarun.packages.service import Installs
from pentarun.packages.workers import NoPorts
from pentarun.registry import Registry
from pentarun.sandbox.launcher import Sandbox
from pentarun.security.operators import ensure_root
from pentarun.store import records
from pentarun.store.db import open_database


@asynccontextmanager
async def admin(tmp_path, **sections):
    config = load_config(environ={}, **sections)
    async with open_database(tmp_path / "db.sqlite") as db, trio.open_nursery() as nursery:
        token = (await ensure_root(db, tmp_path)).read_text().strip()
        platform = assemble(config.supervisor, db)
        supervisor = platform.supervisor
        await nursery.start(supervisor.run)
        installs = Installs(config, tmp_path, db, supervisor, NoPorts())
        await nursery.start(installs.run)
        registry = Registry(db, supervisor, installs)
        sandbox = Sandbox(SecurityConfig(sandbox="off"), tmp_path)  # no workers here
        services = Services(
            config, tmp_path, db, supervisor, platform.events, registry, installs, Feed(), sandbox
        )
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


def manifest(key: str = "demo", **fields) -> Manifest:
    return Manifest(
        key=key,
        name=key,
        version="1.0.0",
        engine=">=0.1",
        traits=[],
        security=Security(authentication_required=True, data_classification=[]),
        **fields,
    )


CONFIG_SCHEMA = {
    "type": "object",
    "properties": {"fps": {"type": "integer", "minimum": 1}, "note": {"type": "string"}},
    "additionalProperties": False,
}


async def installed(services, key="demo", **fields):
    await records.upsert_plugin(
        services.db,
        key,
        name=key,
        version="1.0.0",
        state="VERIFIED",
        manifest=manifest(key, **fields),
    )


BODY_ROUTES = [
    ("POST", "/api/plugins/demo/approve"),
    ("POST", "/api/plugins/demo/reject"),
    ("POST", "/api/plugins/demo/enable"),
    ("POST", "/api/plugins/demo/disable"),
    ("POST", "/api/plugins/demo/quarantine"),
    ("POST", "/api/plugins/demo/call"),
    ("PUT", "/api/plugins/demo/config"),
    ("POST", "/api/properties"),
    ("POST", "/api/properties/p1/cameras"),
    ("POST", "/api/properties/p1/ha-keys"),
    ("POST", "/api/operators"),
    ("POST", "/api/events"),
    ("POST", "/api/trust/keys"),
]


async def test_a_malformed_body_is_a_400_on_every_route_that_reads_one(tmp_path):
    async with admin(tmp_path) as (client, auth, services):
        await client.post("/api/properties", json={"id": "p1", "name": "One"}, headers=auth)
        await installed(services, config_schema=CONFIG_SCHEMA)
        deep = b'{"a":' * 1000 + b"1" + b"}" * 1000
        for method, path in BODY_ROUTES:
            for raw in (b'{"id": "\xff\xfe"}', b"\xff", deep, b"[" * 60_000, b'{"x": '):
                response = await client.open(path, method=method, data=raw, headers=auth)
                assert response.status_code == 400, (method, path, raw[:10])
                assert (await response.get_json())["error"]["code"] == "bad_request"
        assert records.get_config(services.db, "demo") == {}


async def test_a_missing_or_unbounded_field_is_named(tmp_path):
    async with admin(tmp_path) as (client, auth, _):
        missing = await client.post("/api/plugins/demo/approve", json={}, headers=auth)
        assert (await missing.get_json())["error"]["message"] == (
            "invalid request body: Object missing required field `digest`"
        )
        too_many = await client.post(
            "/api/plugins/demo/enable", json={"properties": ["p1"] * 1001}, headers=auth
        )
        assert too_many.status_code == 400
        assert (
            "length <= 1000 - at `$.properties`" in (await too_many.get_json())["error"]["message"]
        )
        for body in ({"id": "p1", "name": "x" * 201}, {"id": "p 1", "name": "x"}):
            named = await client.post("/api/properties", json=body, headers=auth)
            assert named.status_code == 400
            assert "at `$." in (await named.get_json())["error"]["message"]
        camera = await client.post(
            "/api/properties/p1/cameras", json={"id": "c", "name": "C", "source": {"kind": "rtsp"}},
            headers=auth,
        )  # fmt: skip
        assert camera.status_code == 404  # no property p1 yet: nothing else is looked at


async def test_bodies_over_the_route_limit_are_413_before_they_are_read(tmp_path):
    async with admin(tmp_path, server={"max_json_body_bytes": 1000}) as (client, auth, services):
        await installed(services, config_schema=CONFIG_SCHEMA)
        big = msgspec.json.encode({"properties": [f"p{i:05d}" for i in range(200)]})
        assert len(big) > 1000
        for headers in (auth, {**auth, "Content-Length": str(len(big))}):
            refused = await client.post("/api/plugins/demo/enable", data=big, headers=headers)
            assert refused.status_code == 413
            error = (await refused.get_json())["error"]
            assert error["code"] == "too_large" and error["details"]["limit_bytes"] == 1000
        # the configuration route has its own, larger limit
        note = {"note": "x" * 5000}
        stored = await client.put("/api/plugins/demo/config", json=note, headers=auth)
        assert stored.status_code == 200
        unauthenticated = await client.post("/api/plugins/demo/enable", data=big)
        assert unauthenticated.status_code == 401


async def test_a_configuration_is_checked_whole_before_it_is_stored(tmp_path):
    limits = {"max_config_body_bytes": 4096}
    async with admin(tmp_path, server=limits) as (client, auth, services):
        await installed(services, config_schema=CONFIG_SCHEMA)
        ok = await client.put("/api/plugins/demo/config", json={"fps": 5}, headers=auth)
        assert ok.status_code == 200
        attempts = [
            (413, msgspec.json.encode({"note": "x" * 9000})),
            (422, b'{"fps": 0}'),
            (422, b"[1, 2]"),
            (400, b'{"note": ' * 40 + b"1" + b"}" * 40),
            (400, b'{"fps": 5'),
        ]
        for status, raw in attempts:
            response = await client.put("/api/plugins/demo/config", data=raw, headers=auth)
            assert response.status_code == status, raw[:20]
        assert records.get_config(services.db, "demo") == {"fps": 5}
        got = await (await client.get("/api/plugins/demo/config", headers=auth)).get_json()
        assert got == {"config": {"fps": 5}, "schema": CONFIG_SCHEMA}


async def test_path_and_query_parameters_that_cannot_be_valid(tmp_path):
    async with admin(tmp_path) as (client, auth, _):
        for path in (
            "/api/plugins/Not_A_Key",
            "/api/plugins/" + "a" * 70,
            "/api/plugins/demo/tests/..%2Fx",
            "/api/properties/%20p",
            "/api/operators/" + "f" * 65,
        ):
            response = await client.get(path, headers=auth)
            assert response.status_code == 404, path
        for query, name in (
            ({"limit": "0"}, "limit"),
            ({"limit": "1e9"}, "limit"),
            ({"since": "yesterday"}, "since"),
            ({"since": "nan"}, "since"),
            ({"before": "-3"}, "before"),
            ({"plugin": "Bad Key"}, "plugin"),
            ({"property": "x" * 100}, "property"),
            ({"type": "DROP TABLE"}, "type"),
        ):
            response = await client.get("/api/audit", headers=auth, query_string=query)
            assert response.status_code == 400, query
            assert (await response.get_json())["error"]["details"]["parameter"] == name


async def test_lists_are_pages(tmp_path):
    async with admin(tmp_path) as (client, auth, services):
        for pid in ("p1", "p2", "p3"):
            await client.post("/api/properties", json={"id": pid, "name": pid}, headers=auth)
        first = await (
            await client.get("/api/properties", headers=auth, query_string={"limit": "2"})
        ).get_json()
        assert [p["id"] for p in first["properties"]] == ["p1", "p2"]
        rest = await (
            await client.get("/api/properties", headers=auth, query_string={"after": "p2"})
        ).get_json()
        assert [p["id"] for p in rest["properties"]] == ["p3"] and rest["next_after"] is None
        await installed(services)
        for i in range(5):
            records.record_event(services.db, "demo", f"e{i}")
        await services.db.flush()
        page = await (
            await client.get("/api/plugins/demo/events", headers=auth, query_string={"limit": 2})
        ).get_json()
        assert [e["type"] for e in page["events"]] == ["e4", "e3"]
        older = await (
            await client.get(
                "/api/plugins/demo/events",
                headers=auth,
                query_string={"limit": 10, "before": page["next_before"]},
            )
        ).get_json()
        assert [e["type"] for e in older["events"]] == ["e2", "e1", "e0"]
        assert older["next_before"] is None
        listed = await (await client.get("/api/plugins", headers=auth)).get_json()
        assert [p["key"] for p in listed["plugins"]] == ["demo"]


async def test_readiness_names_its_checks(tmp_path):
    async with admin(tmp_path) as (client, _, services):
        waiting = await (await client.get("/readyz")).get_json()
        assert waiting["ready"] is False
        assert set(waiting["checks"]) == {"store", "supervisor", "listeners", "sandbox"}
        assert waiting["checks"]["store"] == {"ok": True}
        services.ready.set()
        services.listeners = {"homeassistant": "http://127.0.0.1:8129"}
        ready = await (await client.get("/readyz")).get_json()
        assert ready["ready"] is True
        assert ready["checks"]["listeners"]["open"] == services.listeners
        assert ready["checks"]["supervisor"]["workers"] == 0


PUBLIC_KEY = base64.b64encode(
    Ed25519PrivateKey.generate().public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
).decode()


async def test_trusted_keys_are_managed_by_root_and_admin_and_audited(tmp_path):
    async with admin(tmp_path) as (client, root, services):
        await client.post("/api/properties", json={"id": "p1", "name": "One"}, headers=root)
        adm, _ = await make_operator(client, root, "ada", "admin")
        pm, _ = await make_operator(client, root, "pam", "property_manager", ["p1"])
        viewer, _ = await make_operator(client, root, "vic", "viewer")
        body = {"key_id": "acme-2026", "public_key": PUBLIC_KEY}
        for who in (pm, viewer):
            assert (await client.get("/api/trust/keys", headers=who)).status_code == 403
            refused = await client.post("/api/trust/keys", json=body, headers=who)
            assert refused.status_code == 403
            assert (
                await client.delete("/api/trust/keys/acme-2026", headers=who)
            ).status_code == 403
        added = await client.post("/api/trust/keys", json=body, headers=adm)
        assert added.status_code == 201
        assert (await added.get_json())["public_key"] == PUBLIC_KEY
        listed = await (await client.get("/api/trust/keys", headers=root)).get_json()
        assert [k["key_id"] for k in listed["keys"]] == ["acme-2026"]
        bad = await client.post(
            "/api/trust/keys", json={"key_id": "x", "public_key": "AAAA"}, headers=adm
        )
        assert bad.status_code == 400
        assert (await client.delete("/api/trust/keys/acme-2026", headers=adm)).status_code == 200
        assert (await client.delete("/api/trust/keys/acme-2026", headers=adm)).status_code == 404
        assert (await client.delete("/api/trust/keys/..", headers=adm)).status_code == 404
        assert (await (await client.get("/api/trust/keys", headers=root)).get_json()) == {
            "keys": []
        }
        await services.db.flush()
        kinds = [e.type for e in records.list_audit(services.db) if e.type.startswith("trust.")]
        assert kinds == ["trust.key_removed", "trust.key_added"]


async def test_ha_keys_take_an_optional_budget_and_list_in_pages(tmp_path):
    async with admin(tmp_path) as (client, auth, _):
        await client.post("/api/properties", json={"id": "p1", "name": "One"}, headers=auth)
        plain = await client.post("/api/properties/p1/ha-keys", json={"name": "ha"}, headers=auth)
        assert plain.status_code == 201
        created = await plain.get_json()
        assert created["key"].startswith("pvh_") and created["rate_limit"] is None
        budget = {"name": "busy", "rate_limit": {"requests": 600, "window_s": 60}}
        busy = await client.post("/api/properties/p1/ha-keys", json=budget, headers=auth)
        assert (await busy.get_json())["rate_limit"] == {"requests": 600, "window_s": 60.0}
        for rate_limit in ({"requests": 0}, {"requests": "many"}, {"requests": 5, "x": 1}):
            refused = await client.post(
                "/api/properties/p1/ha-keys", json={"rate_limit": rate_limit}, headers=auth
            )
            assert refused.status_code == 400, rate_limit
        first = await (
            await client.get("/api/properties/p1/ha-keys", headers=auth, query_string={"limit": 1})
        ).get_json()
        assert [k["name"] for k in first["keys"]] == ["ha"]
        rest = await (
            await client.get(
                "/api/properties/p1/ha-keys",
                headers=auth,
                query_string={"after": first["next_after"]},
            )
        ).get_json()
        assert [k["name"] for k in rest["keys"]] == ["busy"] and rest["next_after"] is None


# --- audit rows hold digests, lists hold summaries ------------------------------------------


async def test_a_configuration_change_is_audited_by_digest_size_and_keys_never_values(tmp_path):
    async with admin(tmp_path) as (client, auth, services):
        await installed(services, config_schema={"type": "object"})
        first = {"password": "hunter2", "fps": 5}
        assert (
            await client.put("/api/plugins/demo/config", json=first, headers=auth)
        ).status_code == 200
        second = {"password": "hunter3", "fps": 5, "note": "n"}
        assert (
            await client.put("/api/plugins/demo/config", json=second, headers=auth)
        ).status_code == 200
        await services.db.flush()
        rows = records.list_audit(services.db, type_="plugin.config_changed")
        assert [r.detail["keys_changed"] for r in rows] == [
            ["note", "password"],
            ["fps", "password"],
        ]
        latest = rows[0].detail
        canonical = msgspec.json.encode(second, order="sorted")
        assert latest["sha256"] == hashlib.sha256(canonical).hexdigest()
        assert latest["size_bytes"] == len(canonical) and latest["keys_changed_count"] == 2
        assert b"hunter" not in msgspec.json.encode([r.detail for r in rows])


def test_a_change_names_a_bounded_number_of_clipped_keys():
    before = {"same": [1], "typed": 1}
    after = {"same": [1], "typed": True, **{f"k{i:03d}" + "x" * 100: i for i in range(80)}}
    detail = plugin_config.change_detail(before, after)
    assert detail["keys_changed_count"] == 81  # 80 new, and 1 -> true is a change
    assert len(detail["keys_changed"]) == plugin_config.MAX_KEYS_SHOWN
    assert all(len(k) <= plugin_config.MAX_KEY_SHOWN for k in detail["keys_changed"])
    assert plugin_config.change_detail(after, after)["keys_changed"] == []


async def test_a_configuration_is_checked_off_the_trio_thread(tmp_path, monkeypatch):
    checked_on: list[threading.Thread] = []
    real_check = plugin_config.check

    def check(*args):
        checked_on.append(threading.current_thread())
        return real_check(*args)

    monkeypatch.setattr(plugin_config, "check", check)
    async with admin(tmp_path) as (client, auth, services):
        await installed(services, config_schema=CONFIG_SCHEMA)
        assert (
            await client.put("/api/plugins/demo/config", json={"fps": 5}, headers=auth)
        ).status_code == 200
        assert checked_on and threading.main_thread() not in checked_on


REPORT = {
    "ok": False,
    "gates": [
        {"gate": "self", "ok": True, "cases": [{"name": "starts", "ok": True}]},
        {"gate": "load", "ok": False, "cases": [{"name": "burst", "ok": False}] * 50},
    ],
    "started_at": 1.0,
    "finished_at": 2.0,
}


async def test_test_runs_list_summaries_and_one_run_has_its_report(tmp_path):
    async with admin(tmp_path) as (client, auth, services):
        await installed(services)
        await records.start_test_run(services.db, "run1", "demo", "1.0.0")
        await records.finish_test_run(services.db, "run1", "failed", REPORT)
        await records.start_test_run(services.db, "run2", "demo", "1.0.0")
        await records.finish_test_run(
            services.db, "run2", "failed", {"ok": False, "error": "e" * 10_000}
        )
        listed = await (await client.get("/api/plugins/demo/tests", headers=auth)).get_json()
        by_id = {run["id"]: run for run in listed["runs"]}
        one = by_id["run1"]
        assert set(one) == {"id", "version", "status", "started_at", "finished_at", "ok", "gates"}
        assert one["gates"] == [{"gate": "self", "ok": True}, {"gate": "load", "ok": False}]
        assert (one["status"], one["ok"], one["version"]) == ("failed", False, "1.0.0")
        assert by_id["run2"]["gates"] == [] and len(by_id["run2"]["error"]) <= 2000
        full = await (await client.get("/api/plugins/demo/tests/run1", headers=auth)).get_json()
        assert full["report"] == REPORT


async def test_a_trusted_key_id_must_match_whole(tmp_path):
    async with admin(tmp_path) as (client, root, _):
        for key_id in ("acme\n", "acme\nx", ".acme", "a" * 129):
            body = {"key_id": key_id, "public_key": PUBLIC_KEY}
            refused = await client.post("/api/trust/keys", json=body, headers=root)
            assert refused.status_code == 400, key_id
        assert (await (await client.get("/api/trust/keys", headers=root)).get_json()) == {
            "keys": []
        }


# --- the call route: the actor decides retries, replies are checked -------------------------


class CallActor:
    def __init__(self, answer):
        self.answer = answer
        self.manifest = manifest("demo", idempotent=["h"])
        self.calls: list[tuple[tuple, dict]] = []

    async def call(self, *args, **kwargs):
        self.calls.append((args, kwargs))
        return self.answer


async def called(tmp_path, monkeypatch, answer):
    async with admin(tmp_path) as (client, auth, services):
        await client.post("/api/properties", json={"id": "p1", "name": "One"}, headers=auth)
        await installed(services)
        actor = CallActor(answer)
        monkeypatch.setattr(services.supervisor.directory, "require", lambda key, state="": actor)
        body = {"handler": "h", "property": "p1"}
        response = await client.post("/api/plugins/demo/call", json=body, headers=auth)
        return response, actor


async def test_the_call_route_leaves_retries_to_the_actor(tmp_path, monkeypatch):
    response, actor = await called(tmp_path, monkeypatch, Reply(0, {"n": 1}))
    assert response.status_code == 200 and (await response.get_json()) == {"result": {"n": 1}}
    [(args, kwargs)] = actor.calls
    assert args == ("h", "p1", {}) and kwargs.get("idempotent", False) is False


async def test_a_bad_raw_reply_is_a_502_on_the_call_route(tmp_path, monkeypatch):
    response, _ = await called(tmp_path, monkeypatch, HttpReply(0, 99, b"x", "text/plain"))
    assert response.status_code == 502
    assert (await response.get_json())["error"]["code"] == "bad_plugin_reply"


async def test_raw_reply_headers_http_cannot_carry_are_dropped_on_the_call_route(
    tmp_path, monkeypatch
):
    headers = {"X-Split": "a\nb", "X-Euro": "€", "Content-Length": "99", "X-Ok": "yes"}
    reply = HttpReply(0, 201, b"abc", "text/plain", headers)
    response, _ = await called(tmp_path, monkeypatch, reply)
    assert response.status_code == 201 and (await response.get_data()) == b"abc"
    assert response.headers["X-Ok"] == "yes"
    assert "X-Split" not in response.headers and "X-Euro" not in response.headers
    assert response.headers.get("Content-Length") in (None, "3")
