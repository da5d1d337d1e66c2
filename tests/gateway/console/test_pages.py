"""The console's pages through quart's test client: what they show, to whom, with which
headers; the strict CSP they are written for (no inline script, style or handlers)."""

import csv
import io
import re
import zipfile
from html.parser import HTMLParser

import msgspec
import pytest
import trio

from pentarun.gateway.app import CSP
from pentarun.gateway.console.routes_wizard import read_wizard
from pentarun.packages.approval import approval_for
from pentarun.packages.manifest import Manifest
from pentarun.packages.pipeline import Job, Stage
from pentarun.security.scopes import Level
from pentarun.store import records

from .helpers import MANIFEST, bearer_token, console, new_operator, plugin_on_record, sign_in

PAGES = ["/", "/plugins/demo", "/upload", "/properties", "/properties/p1", "/operators",
         "/audit", "/feed", "/status", "/trust", "/signin"]  # fmt: skip
MUTATING = re.compile(r"data-api-url|data-upload|data-wizard-open|data-secret")
INLINE = re.compile(r"<script(?![^>]*\bsrc=)[^>]*>|\sstyle=|\son[a-z]+=|javascript:", re.I)


async def setup(client, auth, services, state="VERIFIED"):
    await client.post("/api/properties", json={"id": "p1", "name": "One"}, headers=auth)
    await client.post(
        "/api/properties/p1/cameras", json={"id": "cam", "name": "Door"}, headers=auth
    )
    await plugin_on_record(services, state)


async def html(client, path, **kwargs) -> str:
    response = await client.get(path, **kwargs)
    assert response.status_code == 200, (path, response.status_code)
    return await response.get_data(as_text=True)


async def test_every_page_carries_the_security_headers_and_no_inline_code(tmp_path):
    async with console(tmp_path) as (client, auth, services):
        await setup(client, auth, services)
        await sign_in(client, bearer_token(auth))
        for path in PAGES:
            response = await client.get(path)
            if path == "/signin":
                assert response.status_code == 303  # signed in already
                continue
            assert response.status_code == 200, path
            assert response.headers["Content-Security-Policy"] == CSP
            assert response.headers["Referrer-Policy"] == "no-referrer"
            assert response.headers["X-Content-Type-Options"] == "nosniff"
            assert response.headers["X-Frame-Options"] == "DENY"
            assert response.headers["Cache-Control"] == "no-store"
            assert not INLINE.search(await response.get_data(as_text=True)), path
        api = await client.get("/api/plugins", headers=auth)
        assert api.headers["Content-Security-Policy"] == CSP
        script = await client.get("/static/console.js")
        assert script.status_code == 200 and "javascript" in script.headers["Content-Type"]
        assert script.headers["X-Content-Type-Options"] == "nosniff"
        htmx = await client.get("/static/vendor/htmx-2.0.4.min.js")
        assert htmx.status_code == 200
        assert (await client.get("/static/vendor/htmx-LICENSE.txt")).status_code == 200


async def test_the_csp_allows_what_the_brief_names_and_nothing_inline():
    assert "script-src 'self';" in CSP and "'unsafe-inline'" not in CSP
    assert "frame-ancestors 'none'" in CSP and "base-uri 'none'" in CSP


async def test_the_layout_names_its_parts(tmp_path):
    async with console(tmp_path) as (client, auth, _):
        await sign_in(client, bearer_token(auth))
        page = await html(client, "/")
        assert '<meta name="htmx-config"' in page and '"allowEval": false' in page
        assert '"includeIndicatorStyles": false' in page
        assert '<button type="submit">Sign out</button>' in page
        assert '<th scope="col">Security rating</th>' in page
        assert 'href="#main"' in page  # skip link


async def test_root_sees_the_actions_a_viewer_sees_none(tmp_path):
    async with console(tmp_path) as (client, auth, services):
        await setup(client, auth, services)
        viewer, _ = await new_operator(client, auth, "vic", "viewer")
        await sign_in(client, bearer_token(auth))
        root_page = await html(client, "/plugins/demo")
        for action in ("Enable", "Quarantine", "Upload new version", "Uninstall"):
            assert f">{action}</" in root_page, action
        assert ">Enable for One</button>" in root_page
        assert ">Save configuration</button>" in root_page
        await sign_in(client, viewer)
        for path in PAGES[:-1]:
            response = await client.get(path)
            if path in ("/upload", "/operators", "/trust", "/audit"):
                assert response.status_code == 403, path  # not theirs at all
                continue
            page = await response.get_data(as_text=True)
            assert response.status_code == 200, path
            assert not MUTATING.search(page), (path, MUTATING.search(page))
            assert ">Upload<" not in page and ">Operators<" not in page
        viewer_page = await html(client, "/plugins/demo")
        assert "<fieldset disabled>" in viewer_page  # the configuration, read only


async def test_a_property_manager_acts_on_its_properties_only(tmp_path):
    async with console(tmp_path) as (client, auth, services):
        await setup(client, auth, services)
        await client.post("/api/properties", json={"id": "p2", "name": "Two"}, headers=auth)
        manager, _ = await new_operator(client, auth, "pam", "property_manager", ["p1"])
        await sign_in(client, manager)
        page = await html(client, "/plugins/demo")
        assert ">Enable for One</button>" in page and "Two" not in page
        assert ">Quarantine</" not in page
        assert (await client.get("/properties/p2")).status_code == 404
        first = await client.get("/audit")  # one property at a time: its first one
        assert first.status_code == 303 and first.headers["Location"] == "/audit?property=p1"
        assert (await client.get("/audit/export.csv")).status_code == 403
        assert (await client.get("/audit?property=p1")).status_code == 200


async def test_the_plugins_table_and_its_fragments(tmp_path):
    async with console(tmp_path) as (client, auth, services):
        await setup(client, auth, services)
        await services.registry.assign("demo", "p1")
        await sign_in(client, bearer_token(auth))
        page = await html(client, "/")
        row = re.search(r'<tr id="plugin-row-demo".*?</tr>', page, re.S).group(0)
        for cell in ("Demo", "1.0.0", "VERIFIED", "/6", "p1"):
            assert cell in row
        assert 'hx-trigger="pv-plugin-demo from:body' in row
        assert "Demo" in await html(client, "/plugins/part/rows")
        assert "VERIFIED" in await html(client, "/plugins/demo/part/row")
        for section in ("overview", "properties", "tests", "timeline", "performance", "config"):
            await html(client, f"/plugins/demo/part/{section}")
        assert (await client.get("/plugins/demo/part/nope")).status_code == 404
        await client.delete("/api/plugins/demo", headers=auth)
        await records.delete_plugin(services.db, "demo")
        assert await html(client, "/plugins/demo/part/row") == ""  # the row goes


async def test_unknown_pages_are_html_errors_api_errors_stay_json(tmp_path):
    async with console(tmp_path) as (client, auth, _):
        await sign_in(client, bearer_token(auth))
        page = await client.get("/plugins/ghost")
        assert page.status_code == 404 and page.content_type.startswith("text/html")
        assert "no plugin" in await page.get_data(as_text=True)
        api = await client.get("/api/plugins/ghost")
        assert api.status_code == 404 and (await api.get_json())["error"]["code"] == "not_found"


async def test_the_configuration_form_is_generated_from_the_schema(tmp_path):
    async with console(tmp_path) as (client, auth, services):
        await setup(client, auth, services)
        await records.set_config(services.db, "demo", {"threshold": 4, "mode": "slow"})
        await sign_in(client, bearer_token(auth))
        page = await html(client, "/plugins/demo/part/config")
        assert '<label for="config-threshold">Threshold <span class="required">(required)' in page
        assert 'type="number"' in page and 'min="1.0"' in page and 'value="4"' in page
        assert 'id="config-secret"' in page and 'type="password"' in page
        assert '<option value="slow" selected>' in page
        assert 'type="checkbox" id="config-on"' in page
        assert 'id="config-threshold-error"' in page  # where the route's problems go
        assert 'data-api-method="PUT" data-api-url="/api/plugins/demo/config"' in page


async def test_a_test_run_shows_every_case_by_gate(tmp_path):
    async with console(tmp_path) as (client, auth, services):
        await setup(client, auth, services)
        await records.start_test_run(services.db, "run1", "demo", "1.0.0")
        report = {
            "ok": False,
            "started_at": 1.0,
            "finished_at": 2.0,
            "gates": [
                {"gate": "self", "ok": True, "cases": [{"name": "starts", "ok": True}]},
                {
                    "gate": "integration",
                    "ok": False,
                    "cases": [{"name": "echoes", "ok": False, "detail": "expected ok"}],
                },
                {"gate": "load", "ok": True, "cases": [], "stats": {"p50_ms": 1.5}},
            ],
        }
        await records.finish_test_run(services.db, "run1", "failed", report)
        await sign_in(client, bearer_token(auth))
        page = await html(client, "/plugins/demo/tests/run1")
        assert "Self gate: passed" in page and "Integration gate: failed" in page
        assert '<th scope="row">echoes</th><td>failed</td>' in page and "expected ok" in page
        assert "p50 ms" in page
        assert (await client.get("/plugins/demo/tests/nope")).status_code == 404
        listed = await html(client, "/plugins/demo/part/tests")
        assert "/plugins/demo/tests/run1" in listed and "integration: failed" in listed


async def test_test_runs_reach_the_live_feed(tmp_path):
    async with console(tmp_path) as (_, _, services):
        async with services.feed.subscribe() as feed:
            await records.start_test_run(services.db, "run2", "demo", "1.0.0")
            await records.finish_test_run(services.db, "run2", "passed", {"ok": True})
            started, finished = feed.receive_nowait(), feed.receive_nowait()
        assert started["type"] == finished["type"] == "plugin.test_run"
        assert (started["status"], finished["status"]) == ("running", "passed")
        assert finished["plugin"] == "demo" and finished["run_id"] == "run2"


async def pending_install(services):
    """An install of `demo` waiting for approval, as the pipeline leaves it."""
    manifest = msgspec.convert(MANIFEST, Manifest)
    approval = approval_for(
        key="demo",
        version="1.0.0",
        package_sha256="ab" * 32,
        scopes=manifest.scopes,
        requirements=["greeter==1.0"],
        auto_approve=Level.READ,
    )
    job = msgspec.to_builtins(Job(stage=Stage.DEPENDENCIES_PENDING, reason="waiting"))
    await records.create_install(
        services.db,
        "inst1",
        plugin_key="demo",
        version="1.0.0",
        job=job,
        package_digest="ab" * 32,
        manifest=manifest,
        file_hashes={},
    )
    await records.set_install_approval(services.db, "inst1", approval)
    await plugin_on_record(services, "DEPENDENCIES_PENDING")
    return approval


async def test_the_approval_modal_shows_what_is_asked(tmp_path):
    async with console(tmp_path) as (client, auth, services):
        viewer, _ = await new_operator(client, auth, "vic", "viewer")
        await plugin_on_record(services)
        await sign_in(client, bearer_token(auth))
        assert "Nothing waits for approval" in await html(client, "/plugins/demo/part/approval")
        approval = await pending_install(services)
        modal = await html(client, "/plugins/demo/part/approval")
        assert '<h2 id="modal-title">Approve Demo 1.0.0?</h2>' in modal
        assert "<code>greeter==1.0</code>" in modal
        assert (
            '<th scope="row"><code>cameras:write</code></th><td>write</td><td>30</td><td>yes</td>'
            in modal
        )
        assert f"Risk score: <strong>{approval.risk_score}</strong>" in modal
        assert f'id="approval-digest">{approval.digest}</code>' in modal
        assert "Security rating:" in modal and "requirements.txt" in modal
        assert f'data-api-body=\'{{"digest": "{approval.digest}"}}\'' in modal
        assert 'data-api-url="/api/plugins/demo/reject"' in modal and 'for="reject-reason"' in modal
        progress = await html(client, "/plugins/demo/part/progress")
        assert 'data-progress-state="DEPENDENCIES_PENDING"' in progress
        assert ">Review and approve</button>" in progress
        await sign_in(client, viewer)
        read_only = await html(client, "/plugins/demo/part/approval")
        assert approval.digest in read_only and not MUTATING.search(read_only)


async def test_the_wizard_is_served_sandboxed(tmp_path):
    async with console(tmp_path) as (client, auth, services):
        source = tmp_path / "src"
        (source / "ui").mkdir(parents=True)
        (source / "ui" / "wizard.html").write_text("<p>wizard</p><script>1</script>")
        await plugin_on_record(services)
        await services.db.execute(
            "UPDATE enhanced_plugins SET source_dir = ? WHERE key = 'demo'", (str(source),)
        )
        await sign_in(client, bearer_token(auth))
        wizard = await client.get("/plugins/demo/wizard")
        assert wizard.status_code == 200
        assert await wizard.get_data(as_text=True) == "<p>wizard</p><script>1</script>"
        policy = wizard.headers["Content-Security-Policy"]
        assert policy.startswith("sandbox allow-scripts;") and "allow-same-origin" not in policy
        assert "connect-src 'none'" in policy and "frame-ancestors 'self'" in policy
        assert wizard.headers["X-Frame-Options"] == "SAMEORIGIN"
        page = await html(client, "/plugins/demo")
        assert (
            '<iframe sandbox="allow-scripts"' in page and 'data-src="/plugins/demo/wizard"' in page
        )
        await plugin_on_record(services, ui={})
        assert (await client.get("/plugins/demo/wizard")).status_code == 404


async def test_the_wizard_is_read_from_the_uploaded_package_before_install(tmp_path):
    package = tmp_path / "p.zip"
    with zipfile.ZipFile(package, "w") as archive:
        archive.writestr("ui/wizard.html", "<p>from the zip</p>")
    assert (
        read_wizard([tmp_path / "missing" / "ui" / "wizard.html"], package)
        == b"<p>from the zip</p>"
    )
    assert read_wizard([], tmp_path / "none.zip") is None


async def test_cameras_show_snapshots_and_previews(tmp_path):
    async with console(tmp_path) as (client, auth, services):
        await setup(client, auth, services)
        await sign_in(client, bearer_token(auth))
        page = await html(client, "/properties/p1")
        assert 'src="/api/properties/p1/cameras/cam/snapshot.jpg" alt="Snapshot of Door"' in page
        assert 'data-preview-src="/api/properties/p1/cameras/cam/mjpeg"' in page
        snapshot = await client.get("/api/properties/p1/cameras/cam/snapshot.jpg")
        assert snapshot.status_code == 200 and snapshot.content_type == "image/jpeg"
        assert (await snapshot.get_data())[:2] == b"\xff\xd8"
        assert (await client.get("/api/properties/p1/cameras/nope/snapshot.jpg")).status_code == 404
        assert (await client.get("/api/properties/p9/cameras/cam/snapshot.jpg")).status_code == 404


async def test_ha_keys_and_operators_are_listed(tmp_path):
    async with console(tmp_path) as (client, auth, services):
        await setup(client, auth, services)
        await client.post("/api/properties/p1/ha-keys", json={"name": "tablet"}, headers=auth)
        await sign_in(client, bearer_token(auth))
        keys = await html(client, "/properties/p1/part/keys")
        assert ">Revoke tablet</button>" in keys and 'data-api-method="DELETE"' in keys
        page = await html(client, "/operators")
        assert "root" in page and 'data-secret="token"' in page
        assert ">Remove root<" not in page  # nobody removes themselves


async def test_the_audit_log_filters_and_exports(tmp_path):
    async with console(tmp_path) as (client, auth, services):
        await setup(client, auth, services)
        records.audit(services.db, "operator:x", "plugin.enabled", plugin="demo")
        records.audit(services.db, "=cmd|' /C calc'!A0", "plugin.disabled", plugin="demo")
        records.audit(services.db, "operator:x", "camera.created", property_id="p1")
        await services.db.flush()
        await sign_in(client, bearer_token(auth))
        page = await html(client, "/audit?plugin=demo")
        assert "plugin.enabled" in page and "camera.created" not in page
        assert 'href="/audit/export.csv?plugin=demo"' in page
        exported = await client.get("/audit/export.csv?plugin=demo")
        assert exported.headers["Content-Disposition"].startswith("attachment;")
        rows = list(csv.reader(io.StringIO(await exported.get_data(as_text=True))))
        assert rows[0] == [
            "id",
            "at",
            "actor",
            "type",
            "plugin",
            "property",
            "risk_score",
            "detail",
        ]
        assert {r[3] for r in rows[1:]} == {"plugin.enabled", "plugin.disabled"}
        assert any(r[2].startswith("'=") for r in rows[1:])  # never a live formula
        as_json = msgspec.json.decode(
            await (await client.get("/audit/export.json?type=camera.created")).get_data()
        )
        assert {e["type"] for e in as_json["events"]} == {"camera.created"}
        since = await html(client, "/audit?since=2999-01-01T00:00")
        assert "No audit records match" in since
        bad = await client.get("/audit?since=yesterday")
        assert bad.status_code == 400


@pytest.mark.parametrize("path", ["/feed", "/status"])
async def test_watch_pages(tmp_path, path):
    async with console(tmp_path) as (client, auth, services):
        await setup(client, auth, services)
        await sign_in(client, bearer_token(auth))
        page = await html(client, path)
        if path == "/feed":
            assert "data-feed-list" in page and ">Publish event</button>" in page
        else:
            assert "Readiness checks" in page and "sandbox" in page


async def first_chunk(client, path, headers) -> bytes:
    """The first chunk of an endless stream; leaving cancels the route (as a client going away
    does: the test client does not end a stream on a disconnect)."""
    chunk = b""
    with trio.fail_after(10), trio.CancelScope() as scope:
        async with client.request(path, headers=headers) as connection:
            await connection.send_complete()
            chunk = await connection.receive()
            scope.cancel()
    return chunk


async def test_the_log_stream_and_the_camera_preview_stream(tmp_path):
    async with console(tmp_path) as (client, auth, services):
        await setup(client, auth, services)
        assert (await client.get("/api/plugins/demo/logs/stream")).status_code == 401
        bad = await client.get("/api/plugins/demo/logs/stream?level=LOUD", headers=auth)
        assert bad.status_code == 400
        assert (await bad.get_json())["error"]["details"]["parameter"] == "level"
        assert (await client.get("/api/plugins/ghost/logs/stream", headers=auth)).status_code == 404
        logs = await first_chunk(client, "/api/plugins/demo/logs/stream?level=INFO", auth)
        assert logs.startswith(b": connected")
        frame = await first_chunk(client, "/api/properties/p1/cameras/cam/mjpeg", auth)
        assert frame.startswith(b"--pentarunframe\r\nContent-Type: image/jpeg\r\n")
        assert b"\xff\xd8" in frame


class _Controls(HTMLParser):
    """Fields and their labels, buttons and their text, table headers of one page."""

    def __init__(self) -> None:
        super().__init__()
        self.fields: list[dict[str, str | None]] = []
        self.labels: set[str] = set()
        self.buttons: list[str] = []
        self.header_cells: list[dict[str, str | None]] = []
        self._button: list[str] | None = None

    def handle_starttag(self, tag, attrs):
        attributes = dict(attrs)
        if tag in ("input", "select", "textarea") and attributes.get("type") != "hidden":
            self.fields.append(attributes)
        elif tag == "label" and attributes.get("for"):
            self.labels.add(attributes["for"])
        elif tag == "button":
            self._button = []
        elif tag == "th":
            self.header_cells.append(attributes)

    def handle_data(self, data):
        if self._button is not None:
            self._button.append(data)

    def handle_endtag(self, tag):
        if tag == "button" and self._button is not None:
            self.buttons.append("".join(self._button).strip())
            self._button = None


async def test_every_field_is_labelled_every_button_named_every_header_scoped(tmp_path):
    async with console(tmp_path) as (client, auth, services):
        await setup(client, auth, services)
        await client.post("/api/properties/p1/ha-keys", json={"name": "tablet"}, headers=auth)
        await pending_install(services)
        await sign_in(client, bearer_token(auth))
        pages = [*PAGES[:-1], "/plugins/demo/part/approval", "/plugins/demo/part/progress"]
        for path in pages:
            controls = _Controls()
            controls.feed(await html(client, path))
            for field in controls.fields:
                assert field.get("id") in controls.labels or field.get("aria-label"), (path, field)
            assert all(controls.buttons), (path, controls.buttons)
            assert all(cell.get("scope") in ("col", "row") for cell in controls.header_cells), path


async def test_a_degraded_dependent_shows_why_and_its_dependencies(tmp_path):
    async with console(tmp_path) as (client, auth, services):
        await setup(client, auth, services)  # demo, VERIFIED
        await plugin_on_record(
            services, "ENABLED", key="cam", name="Cam", dependencies={"demo": ">=1"}
        )
        await sign_in(client, bearer_token(auth))
        row = await html(client, "/plugins/cam/part/row")
        assert "DEGRADED" in row and "demo is VERIFIED" in row
        overview = await html(client, "/plugins/cam/part/overview")
        assert "Depends on" in overview and 'href="/plugins/demo"' in overview
        assert "dependency demo is VERIFIED" in overview


async def test_a_camera_of_any_source_can_be_added_from_the_property_page(tmp_path):
    async with console(tmp_path) as (client, auth, services):
        await setup(client, auth, services)
        await sign_in(client, bearer_token(auth))
        page = await html(client, "/properties/p1")
        for kind in ("demo", "http", "mjpeg", "rtsp", "file"):
            assert f'<option value="{kind}">' in page
        for name in ("source.url", "source.path", "source.credentials.username"):
            assert f'name="{name}"' in page
        assert 'name="source.credentials.password" type="password"' in page
        cameras = await html(client, "/properties/p1/part/cameras")
        assert "Door" in cameras and ("online" in cameras or "offline" in cameras)
