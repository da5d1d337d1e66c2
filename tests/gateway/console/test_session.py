"""The console's session and CSRF rules (pure): expiry, the CSRF decision, origins, where to
go after signing in."""

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pentarun.gateway.console import session as rules

LIMITS = rules.Limits(idle_s=3600, absolute_s=12 * 3600)
ORIGIN = "http://127.0.0.1:8128"
TOKEN = rules.csrf_token("secret")
UNSAFE = st.sampled_from(["POST", "PUT", "PATCH", "DELETE", "post"])
times = st.floats(min_value=0, max_value=1e6, allow_nan=False)


@given(created=times, since_start=times, since_seen=times)
def test_a_session_is_never_valid_past_either_limit(created, since_start, since_seen):
    now = created + since_start
    last_seen = max(created, now - since_seen)
    stored_end = rules.ends_at(created, LIMITS)
    verdict = rules.verdict(created, stored_end, last_seen, now, LIMITS)
    if since_start >= LIMITS.absolute_s:
        assert verdict is rules.Verdict.EXPIRED
    elif now - last_seen >= LIMITS.idle_s:
        assert verdict is rules.Verdict.IDLE
    else:
        assert verdict is rules.Verdict.VALID


@given(created=times, left=st.floats(min_value=0, max_value=1e5))
def test_the_stored_end_counts_when_it_is_earlier(created, left):
    stored_end = created + min(left, LIMITS.absolute_s)
    assert (
        rules.verdict(created, stored_end, stored_end, stored_end, LIMITS) is rules.Verdict.EXPIRED
    )


def test_a_clock_before_the_start_is_not_trusted():
    assert rules.verdict(100.0, 1e9, 100.0, 50.0, LIMITS) is rules.Verdict.EXPIRED


def test_the_last_request_is_written_at_most_once_a_minute():
    assert not rules.needs_touch(1000.0, 1030.0, LIMITS)
    assert rules.needs_touch(1000.0, 1060.0, LIMITS)
    short = rules.Limits(idle_s=120, absolute_s=600)
    assert rules.needs_touch(1000.0, 1012.0, short)  # a tenth of a short idle limit


def refusal(method="POST", token=TOKEN, origin=ORIGIN, site="same-origin"):
    return rules.refusal(
        method,
        token_sent=token,
        expected_token=TOKEN,
        origin=origin,
        fetch_site=site,
        allowed_origin=ORIGIN,
    )


@pytest.mark.parametrize(
    ("changes", "code"),
    [
        ({}, None),
        ({"origin": None, "site": None}, None),  # an older browser sends neither
        ({"token": None}, "csrf_missing"),
        ({"token": ""}, "csrf_missing"),
        ({"token": "x" + TOKEN}, "csrf_invalid"),
        ({"origin": "http://evil.example"}, "csrf_cross_origin"),
        ({"origin": "http://127.0.0.1:9999"}, "csrf_cross_origin"),
        ({"origin": "https://127.0.0.1:8128"}, "csrf_cross_origin"),
        ({"site": "cross-site"}, "csrf_cross_site"),
        ({"site": "same-site"}, "csrf_cross_site"),
        ({"site": "none"}, "csrf_cross_site"),
        # the console's own pages post with Origin: null under Referrer-Policy: no-referrer
        ({"origin": "null"}, None),
        ({"origin": "null", "site": None}, "csrf_cross_origin"),
        ({"origin": "null", "site": "cross-site"}, "csrf_cross_site"),
        ({"origin": "HTTP://127.0.0.1:8128"}, None),
    ],
)
def test_what_a_cookie_authenticated_change_needs(changes, code):
    found = refusal(**changes)
    assert (found.code if found else None) == code


@given(method=st.sampled_from(["GET", "HEAD", "OPTIONS", "get"]), token=st.none() | st.text())
def test_reading_needs_no_token(method, token):
    assert refusal(method, token=token, origin="http://evil.example", site="cross-site") is None


@given(method=UNSAFE, token=st.none() | st.text(max_size=80))
def test_no_change_passes_without_the_sessions_token(method, token):
    found = refusal(method, token=token)
    assert (found is None) == (token == TOKEN)


def test_tokens_belong_to_their_secret():
    assert rules.csrf_token("a") == rules.csrf_token("a")
    assert rules.csrf_token("a") != rules.csrf_token("b")
    assert "a" not in rules.csrf_token("a")
    assert len(rules.hash_session_id("sid")) == 64
    assert rules.new_session_id() != rules.new_session_id()


@pytest.mark.parametrize(
    ("url", "origin"),
    [
        ("http://127.0.0.1:8128/", "http://127.0.0.1:8128"),
        ("https://Console.Example.org:443/x", "https://console.example.org"),
        ("http://example.org:80", "http://example.org"),
        ("http://[::1]:8128/", "http://[::1]:8128"),
        ("ftp://example.org", ""),
        ("null", ""),
        ("http://host:99999", ""),
    ],
)
def test_origins(url, origin):
    assert rules.origin_of(url) == origin


def test_signing_in_from_elsewhere():
    assert not rules.origin_refusal(ORIGIN, "same-origin", ORIGIN)
    assert not rules.origin_refusal(None, None, ORIGIN)
    assert not rules.origin_refusal("null", "same-origin", ORIGIN)
    assert not rules.origin_refusal(None, "none", ORIGIN)  # typed into the address bar
    assert rules.origin_refusal("http://evil.example", None, ORIGIN)
    assert rules.origin_refusal(None, "cross-site", ORIGIN)
    assert rules.origin_refusal("null", None, ORIGIN)


@pytest.mark.parametrize(
    ("target", "goes_to"),
    [
        ("/plugins/demo?x=1#logs", "/plugins/demo?x=1#logs"),
        (None, "/"),
        ("", "/"),
        ("//evil.example/", "/"),
        ("/\\evil.example", "/"),
        ("https://evil.example/", "/"),
        ("plugins", "/"),
        ("/signin?next=/", "/"),
        ("/a\nb", "/"),
    ],
)
def test_where_signing_in_leads(target, goes_to):
    assert rules.safe_next(target) == goes_to


@given(st.text(max_size=200))
def test_signing_in_never_leads_off_the_console(target):
    result = rules.safe_next(target)
    assert result.startswith("/") and not result.startswith("//") and "\\" not in result


def test_the_cookie_is_secure_behind_https_only():
    assert rules.secure_cookie("https://console.example.org")
    assert not rules.secure_cookie("http://127.0.0.1:8128")
    assert not rules.secure_cookie("")
