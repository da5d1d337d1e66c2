"""The operator console in a real browser (headless chromium through selenium) against a real
`pentarun serve`: one server and one browser for the module, the steps in order, as an
operator would go: sign in, create a property, upload a plugin that needs approval, approve
it in the modal, watch it reach VERIFIED, enable it, read its test run, watch a log line
arrive, quarantine and release it, create and revoke a Home Assistant key; and what must be
refused: a wrong token, a change without the CSRF token, a viewer's controls."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path

import pytest
import trio
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import Select

from pentarun.packages.builder import pack, read_tree

from .browser import Browser, require_chromium
from .conftest import PLUGINS
from .server import Server

KEY = "camwatch"
NAME = "Camera watch"
STATE = "#overview .facts div:first-child dd"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    require_chromium()
    root = tmp_path_factory.mktemp("console")
    srv = Server(root / "var")
    trio.run(srv.started)
    yield srv
    srv.stop()


@pytest.fixture(scope="module")
def package(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The plugin's package, as an operator would have it on disk."""
    path = tmp_path_factory.mktemp("package") / f"{KEY}-1.0.0.zip"
    path.write_bytes(pack(read_tree(PLUGINS / KEY), "tests"))
    return path


@pytest.fixture(scope="module")
def browser(server: Server) -> Iterator[Browser]:
    b = Browser(server.url)
    yield b
    b.quit()


def sign_in(browser: Browser, token: str) -> None:
    browser.open("/signin")
    browser.fill("#token", token)
    browser.click("Sign in")


def state_is(browser: Browser, *states: str) -> None:
    browser.until(
        lambda d: d.find_element(By.CSS_SELECTOR, STATE).text.strip() in states,
        f"the plugin to be {' or '.join(states)}",
        60,
    )


def test_a_wrong_token_is_refused(browser: Browser) -> None:
    sign_in(browser, "pvo_not-a-token")
    browser.wait_text("#signin-error", "not a valid operator token")
    assert browser.driver.current_url.endswith("/signin")
    assert not browser.driver.get_cookies()


def test_sign_in(browser: Browser, server: Server) -> None:
    sign_in(browser, server.token)
    browser.wait_text("h1", "Plugins")
    cookie = browser.driver.get_cookie("pentarun_session")
    assert cookie and cookie["httpOnly"] and cookie["sameSite"] == "Strict"
    browser.wait_text("#feed-status", "Live")


def test_create_a_property(browser: Browser) -> None:
    browser.open("/properties")
    browser.fill("#property-id", "p1")
    browser.fill("#property-name", "Property One")
    browser.click("Create property")
    browser.wait_text("table.data", "Property One")


def test_upload_approve_and_watch_it_reach_verified(browser: Browser, package: Path) -> None:
    browser.open("/upload")
    browser.css("#package-file").send_keys(str(package))
    browser.click("Upload", "#upload-form")
    browser.css('#upload-progress [data-progress-state="DEPENDENCIES_PENDING"]')
    browser.click("Review and approve", "#upload-progress")
    dialog = browser.visible("#modal")
    assert "cameras:write" in dialog.text and "Risk score" in dialog.text
    digest = browser.css("#approval-digest").text
    assert re.fullmatch(r"[0-9a-f]{64}", digest)
    browser.click("Approve", "#modal")
    browser.until(lambda d: not d.find_element(By.ID, "modal").is_displayed(), "the modal to close")
    browser.until(
        lambda d: d.find_elements(
            By.CSS_SELECTOR, '#upload-progress [data-progress-state="VERIFIED"]'
        ),
        "the pipeline to reach VERIFIED, live",
        60,
    )
    done = [li.text.splitlines()[0] for li in browser.all("#upload-progress ol.pipeline li.done")]
    assert done == [
        "UPLOADED",
        "VALIDATING",
        "DEPENDENCIES PENDING",
        "INSTALLING",
        "TESTING",
        "INSTALLED",
    ], done


def test_enable_it_for_a_property(browser: Browser) -> None:
    browser.open(f"/plugins/{KEY}")
    browser.click("Enable for Property One")
    state_is(browser, "ENABLED")
    browser.wait_text("#properties", "Disable for Property One")
    browser.open("/")
    browser.wait_text(f"#plugin-row-{KEY}", "ENABLED")
    browser.wait_text(f"#plugin-row-{KEY}", "p1")


def test_open_its_test_run_and_see_every_case(browser: Browser) -> None:
    browser.open(f"/plugins/{KEY}")
    browser.css("#tests a[href*='/tests/']").click()
    browser.wait_text("h1", "Test run of Camera watch")
    for gate in ("Self", "Integration", "Security", "Load", "Recovery"):
        browser.wait_text("section.gate h2", f"{gate} gate: passed")
    cases = browser.text("section.gate table.cases")
    assert "echoes its parameters" in cases and "logs a marker" in cases
    assert "failed" not in cases


def test_a_log_line_appears_live(browser: Browser) -> None:
    browser.open(f"/plugins/{KEY}")
    browser.wait_text("#log-status", "Live")
    Select(browser.css("#call-handler")).select_by_value("watch.log")
    browser.fill("#call-params", json.dumps({"marker": "seen-live-42"}))
    browser.click("Call handler")
    browser.wait_text("#call-result", "seen-live-42")
    browser.wait_text("#log-lines", "camwatch marker seen-live-42")
    Select(browser.css("#log-level")).select_by_value("ERROR")  # the filter: no WARNING now
    browser.wait_text("#log-status", "Live")
    assert "seen-live-42" not in browser.text("#log-lines")


def test_the_wizard_proposes_a_configuration_checked_at_the_fields(browser: Browser) -> None:
    browser.open(f"/plugins/{KEY}")
    browser.click("Open the setup wizard")
    frame = browser.css("iframe[data-wizard-frame]")
    browser.driver.switch_to.frame(frame)
    browser.wait_text("#state", "Current threshold: not set")  # the console's init message
    browser.fill("#threshold", "42")
    browser.click("Use these settings")
    browser.driver.switch_to.default_content()
    browser.wait_text("#config-threshold-error", "42 is greater than the maximum of 10")
    browser.driver.switch_to.frame(frame)
    browser.fill("#threshold", "7")
    browser.click("Use these settings")
    browser.driver.switch_to.default_content()
    browser.wait_text("#wizard-status", "Saved")
    saved = browser.fetch("GET", f"/api/plugins/{KEY}/config")
    # the wizard's values over the form's (an unchecked box is false, empty lists are left out)
    assert saved["body"]["config"] == {"threshold": 7, "label": "front", "notify": False}
    browser.until(
        lambda d: d.find_element(By.ID, "config-threshold").get_attribute("value") == "7",
        "the form to show the saved value",
    )
    # the frame is sandboxed: no same-origin access, so no cookie and no API from inside it
    assert "allow-same-origin" not in frame.get_attribute("sandbox")


def test_quarantine_and_release(browser: Browser) -> None:
    browser.open(f"/plugins/{KEY}")
    browser.click("Quarantine", "#overview")
    browser.fill("#modal-reason", "suspicious traffic")
    browser.click("Quarantine", "#modal")
    state_is(browser, "QUARANTINED")
    browser.wait_text("#overview", "Why it was quarantined")
    browser.wait_text("#overview", "suspicious traffic")
    browser.click("Release", "#overview")
    browser.click("Release", "#modal")
    state_is(browser, "VERIFIED", "ENABLED")


def test_create_and_revoke_a_home_assistant_key(browser: Browser) -> None:
    browser.open("/properties/p1")
    browser.fill("#key-name", "kitchen tablet")
    browser.click("Create key")
    secret = browser.css("#secret-value")
    browser.until(lambda d: secret.text.startswith("pvh_"), "the new key, shown once")
    assert browser.button("Copy")
    browser.wait_text("#ha-keys", "kitchen tablet")
    browser.click("Revoke kitchen tablet")
    browser.click("Revoke kitchen tablet", "#modal")
    browser.until(lambda d: "kitchen tablet" not in browser.text("#ha-keys"), "the key to go")


def test_a_change_without_the_csrf_token_is_refused(browser: Browser) -> None:
    browser.open("/properties")
    refused = browser.fetch("POST", "/api/properties", {"id": "p2", "name": "Two"}, csrf=False)
    assert refused["status"] == 403
    assert refused["body"]["error"]["code"] == "csrf_missing"
    allowed = browser.fetch("POST", "/api/properties", {"id": "p2", "name": "Two"})
    assert allowed["status"] == 201


def test_a_viewer_sees_no_mutating_control(browser: Browser) -> None:
    browser.open("/operators")
    browser.fill("#operator-name", "vera")
    Select(browser.css("#operator-role")).select_by_value("viewer")
    browser.click("Create operator")
    token = browser.css("#secret-value")
    browser.until(lambda d: token.text.startswith("pvo_"), "the viewer's token, shown once")
    viewer_token = token.text
    browser.click("Sign out")
    browser.wait_text("body", "You are signed out")
    sign_in(browser, viewer_token)
    browser.wait_text(".who", "vera")
    for path in ("/", f"/plugins/{KEY}", "/properties", "/properties/p1", "/feed", "/status"):
        browser.open(path)
        browser.css("main h1")
        mutating = browser.all("[data-api-url], form[data-upload], [data-wizard-open]")
        assert mutating == [], (path, [m.get_attribute("outerHTML")[:120] for m in mutating])
        assert "Upload" not in browser.text("header nav")
    refused = browser.fetch("POST", f"/api/plugins/{KEY}/quarantine", {})
    assert refused["status"] == 403 and refused["body"]["error"]["code"] == "forbidden"


def test_no_page_broke_its_content_security_policy(browser: Browser) -> None:
    violations = [m for m in browser.console_errors() if "Content Security Policy" in m]
    assert violations == []
