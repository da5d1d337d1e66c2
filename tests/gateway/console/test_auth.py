"""Signing in and out, sessions that end, CSRF on every change made with the session cookie,
and the bearer token still working beside them (quart's test client)."""

import time

from pentarun.gateway.console.session import COOKIE, hash_session_id
from pentarun.security.operators import hash_token
from pentarun.store import records

from .helpers import bearer_token, console, csrf_of, new_operator, session_cookie, sign_in

ORIGIN = "http://localhost"


async def test_pages_send_a_stranger_to_sign_in(tmp_path):
    async with console(tmp_path) as (client, _, _):
        page = await client.get("/plugins/demo?x=1")
        assert page.status_code == 303
        assert page.headers["Location"] == "/signin?next=/plugins/demo%3Fx%3D1"
        fragment = await client.get("/plugins/part/rows", headers={"HX-Request": "true"})
        assert fragment.status_code == 200 and fragment.headers["HX-Redirect"].startswith("/signin")
        form = await client.get("/signin")
        html = await form.get_data(as_text=True)
        assert form.status_code == 200 and '<label for="token">' in html


async def test_sign_in_sets_a_strict_http_only_cookie_and_stores_only_its_hash(tmp_path):
    async with console(tmp_path) as (client, auth, services):
        response = await client.post(
            "/signin", form={"token": bearer_token(auth), "next": "/plugins/x"}
        )
        assert response.status_code == 303 and response.headers["Location"] == "/plugins/x"
        cookie = response.headers["Set-Cookie"]
        assert cookie.startswith(f"{COOKIE}=")
        for attribute in ("HttpOnly", "SameSite=Strict", "Path=/", "Max-Age=43200"):
            assert attribute in cookie
        assert "Secure" not in cookie
        session_id = session_cookie(client)
        row = records.session_by_hash(services.db, hash_session_id(session_id))
        assert row is not None and row.operator.role == "root"
        stored = services.db.read("SELECT id_hash FROM console_sessions")
        assert [r["id_hash"] for r in stored] == [hash_session_id(session_id)]
        await services.db.flush()
        assert any(r.type == "operator.signed_in" for r in records.list_audit(services.db))


async def test_the_cookie_is_secure_behind_an_https_public_url(tmp_path):
    async with console(tmp_path, console={"public_url": "https://pv.example.org"}) as (
        client,
        auth,
        _,
    ):
        response = await client.post(
            "/signin",
            form={"token": bearer_token(auth)},
            headers={"Origin": "https://pv.example.org"},
        )
        assert "Secure" in response.headers["Set-Cookie"]


async def test_a_wrong_token_is_refused_audited_and_limited(tmp_path):
    async with console(tmp_path, console={"signin_failures": 3}) as (client, auth, services):
        for _ in range(3):
            wrong = await client.post("/signin", form={"token": "pvo_wrong"})
            assert wrong.status_code == 401
            assert "not a valid operator token" in await wrong.get_data(as_text=True)
            assert session_cookie(client) is None
        blocked = await client.post("/signin", form={"token": bearer_token(auth)})
        assert blocked.status_code == 429 and int(blocked.headers["Retry-After"]) >= 1
        assert session_cookie(client) is None  # even the right token, while blocked
        await services.db.flush()
        failed = records.list_audit(services.db, type_="security.signin_failed")
        assert len(failed) == 3 and failed[0].risk_score > 0


async def test_signing_in_from_another_site_is_refused(tmp_path):
    async with console(tmp_path) as (client, auth, _):
        for headers in ({"Origin": "http://evil.example"}, {"Sec-Fetch-Site": "cross-site"}):
            response = await client.post(
                "/signin", form={"token": bearer_token(auth)}, headers=headers
            )
            assert response.status_code == 403
            assert session_cookie(client) is None


async def test_changes_with_the_cookie_need_the_csrf_token(tmp_path):
    async with console(tmp_path) as (client, auth, _):
        csrf = await sign_in(client, bearer_token(auth))
        body = {"id": "p1", "name": "One"}
        cases = [
            ({}, "csrf_missing"),
            ({"X-CSRF-Token": csrf + "x"}, "csrf_invalid"),
            ({"X-CSRF-Token": csrf, "Origin": "http://evil.example"}, "csrf_cross_origin"),
            ({"X-CSRF-Token": csrf, "Sec-Fetch-Site": "cross-site"}, "csrf_cross_site"),
        ]
        for headers, code in cases:
            refused = await client.post("/api/properties", json=body, headers=headers)
            assert refused.status_code == 403, code
            assert (await refused.get_json())["error"]["code"] == code
        ok = await client.post(
            "/api/properties",
            json=body,
            headers={"X-CSRF-Token": csrf, "Origin": ORIGIN, "Sec-Fetch-Site": "same-origin"},
        )
        assert ok.status_code == 201
        assert (await client.get("/api/properties")).status_code == 200  # reads need none


async def test_a_csrf_refusal_is_audited_as_a_security_event(tmp_path):
    async with console(tmp_path) as (client, auth, services):
        await sign_in(client, bearer_token(auth))
        await client.delete("/api/operators/x")
        await services.db.flush()
        [event] = records.list_audit(services.db, type_="security.csrf_refused")
        assert event.actor == "operator:root" and event.risk_score >= 50
        assert event.detail == {
            "code": "csrf_missing",
            "method": "DELETE",
            "path": "/api/operators/x",
            "origin": "",
        }


async def test_bearer_tokens_keep_working_and_need_no_csrf(tmp_path):
    async with console(tmp_path) as (client, auth, _):
        await sign_in(client, bearer_token(auth))
        created = await client.post("/api/properties", json={"id": "p1", "name": "1"}, headers=auth)
        assert created.status_code == 201
        wrong = await client.get("/api/plugins", headers={"Authorization": "Bearer pvo_nope"})
        assert wrong.status_code == 401  # the header decides, not the cookie beside it


async def test_an_ended_session_is_refused(tmp_path):
    async with console(tmp_path) as (client, auth, services):
        await sign_in(client, bearer_token(auth))
        id_hash = hash_session_id(session_cookie(client))
        await services.db.execute(
            "UPDATE console_sessions SET last_seen_at = ? WHERE id_hash = ?",
            (time.time() - 3601, id_hash),
        )
        api = await client.get("/api/plugins")
        assert api.status_code == 401
        body = await api.get_json()
        assert body["error"]["code"] == "unauthorized" and body["error"]["details"] == {
            "session": "idle"
        }
        page = await client.get("/")
        assert page.status_code == 303 and page.headers["Location"].startswith("/signin")
        assert f"{COOKIE}=;" in page.headers["Set-Cookie"]  # cleared
        await sign_in(client, bearer_token(auth))
        id_hash = hash_session_id(session_cookie(client))
        await services.db.execute(
            "UPDATE console_sessions SET created_at = ?, last_seen_at = ? WHERE id_hash = ?",
            (time.time() - 12 * 3600 - 1, time.time(), id_hash),
        )
        expired = await client.get("/api/plugins")
        assert (await expired.get_json())["error"]["details"] == {"session": "expired"}


async def test_sessions_die_with_their_operator_and_on_sign_out(tmp_path):
    async with console(tmp_path) as (client, auth, services):
        token, operator_id = await new_operator(client, auth, "ann", "admin")
        csrf = await sign_in(client, token)
        assert (await client.get("/api/plugins")).status_code == 200
        revoked = await client.delete(f"/api/operators/{operator_id}", headers=auth)
        assert revoked.status_code == 200
        assert (await client.get("/api/plugins")).status_code == 401
        assert (await client.get("/")).status_code == 303

        csrf = await sign_in(client, bearer_token(auth))
        cookie = session_cookie(client)
        refused = await client.post("/signout", form={})
        assert refused.status_code == 403  # no token: another site cannot sign anyone out
        assert (await client.get("/api/plugins")).status_code == 200
        out = await client.post("/signout", form={"csrf_token": csrf})
        assert out.status_code == 303 and out.headers["Location"] == "/signin?ended=1"
        assert records.session_by_hash(services.db, hash_session_id(cookie)) is None
        client.set_cookie("localhost", COOKIE, cookie)  # a copy of the old cookie
        assert (await client.get("/api/plugins")).status_code == 401


async def test_signing_in_again_forgets_ended_sessions(tmp_path):
    async with console(tmp_path) as (client, auth, services):
        await sign_in(client, bearer_token(auth))
        await services.db.execute("UPDATE console_sessions SET expires_at = 0")
        await sign_in(client, bearer_token(auth))
        operator = records.operator_by_token_hash(services.db, hash_token(bearer_token(auth)))
        assert records.count_sessions(services.db, operator.id) == 1


async def test_the_page_token_is_the_sessions(tmp_path):
    async with console(tmp_path) as (client, auth, _):
        first = await sign_in(client, bearer_token(auth))
        assert await csrf_of(client) == first
        second = await sign_in(client, bearer_token(auth))
        assert second != first  # a new session, a new token


async def test_behind_a_trusted_proxy_each_client_has_its_own_failures(tmp_path):
    settings = {"signin_failures": 2, "trusted_proxies": ["127.0.0.1"]}
    async with console(tmp_path, console=settings) as (client, auth, _):
        proxy = {"client": ("127.0.0.1", 40000)}  # every request comes through the proxy
        attacker = {"X-Forwarded-For": "10.0.0.5"}
        for forged in ("10.0.0.9", "10.0.0.8"):  # what the client claims before the proxy's
            headers = {"X-Forwarded-For": f"{forged}, 10.0.0.5"}
            wrong = await client.post(
                "/signin", form={"token": "pvo_wrong"}, headers=headers, scope_base=proxy
            )
            assert wrong.status_code == 401
        blocked = await client.post(
            "/signin", form={"token": bearer_token(auth)}, headers=attacker, scope_base=proxy
        )
        assert blocked.status_code == 429
        operator = {"X-Forwarded-For": "10.0.0.6"}  # another operator behind the same proxy
        ok = await client.post(
            "/signin", form={"token": bearer_token(auth)}, headers=operator, scope_base=proxy
        )
        assert ok.status_code in (302, 303) and session_cookie(client) is not None
