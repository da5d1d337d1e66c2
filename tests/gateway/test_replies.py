"""A plugin's HTTP answer, checked before the HTTP server sees it. Pure, with h11 (what
hypercorn speaks HTTP/1.1 with) as the judge of what can go on the wire."""

import subprocess
import sys

import h11
import pytest
from hypothesis import given
from hypothesis import strategies as st

from pentarun.errors import BadPluginReply
from pentarun.gateway.replies import MAX_HEADERS, plugin_head

RATE = {"X-RateLimit-Remaining": "9"}


def on_the_wire(status, headers, body=b""):
    """Send the answer through an h11 server connection, as hypercorn would; raise if h11
    refuses it. Returns the bytes a client would read."""
    conn = h11.Connection(h11.SERVER)
    conn.receive_data(b"GET /x HTTP/1.1\r\nHost: h\r\n\r\n")
    conn.next_event(), conn.next_event()
    out = conn.send(h11.Response(status_code=status, headers=headers))
    if body:
        out += conn.send(h11.Data(data=body))
    return out + conn.send(h11.EndOfMessage())


@pytest.mark.parametrize("status", [0, 99, 100, 101, 199, 600, 1000, -1, 2**70])
def test_a_status_http_cannot_carry_is_a_502(status):
    with pytest.raises(BadPluginReply) as info:
        plugin_head(status, "text/plain", {})
    assert (info.value.http_status, info.value.error_code) == (502, "bad_plugin_reply")


@pytest.mark.parametrize("content_type", ["", "text/plain\r\nX-Evil: 1", "tëxt/€", "a\x00b"])
def test_a_content_type_that_is_no_header_value_is_a_502(content_type):
    with pytest.raises(BadPluginReply):
        plugin_head(200, content_type, {})


def test_framing_and_hop_by_hop_headers_are_the_cores():
    head = plugin_head(
        200,
        "text/plain",
        {
            "Content-Length": "999",
            "content-length": "5",
            "Content-Type": "text/html",
            "Transfer-Encoding": "chunked",
            "Connection": "close, X-Secret",
            "Keep-Alive": "timeout=5",
            "Upgrade": "h2c",
            "TE": "trailers",
            "Trailer": "X-T",
            "X-Secret": "named by Connection",
            "X-Kept": "yes",
            "x-ratelimit-remaining": "1000",  # the core's header wins
        },
        RATE,
    )
    assert head.headers == [("x-kept", "yes"), ("x-ratelimit-remaining", "9")]
    assert "Transfer-Encoding" in head.dropped and "x-ratelimit-remaining" not in head.dropped
    wire = on_the_wire(head.status, head.asgi(3), b"abc")
    assert wire.count(b"content-length") == 1 and b"chunked" not in wire


def test_names_and_values_http_cannot_carry_are_dropped():
    head = plugin_head(
        201,
        "application/json",
        {
            "": "empty name",
            " ": "space",
            "X Bad": "space inside",
            "X-Ünicode": "name",
            "X-Newline": "a\r\nSet-Cookie: evil=1",
            "X-Euro": "€",
            "X-Nul": "a\x00b",
            "X-Long": "v" * 10_000,
            "X-Latin": " café ",  # Latin-1 is fine; surrounding spaces are trimmed
            "X-Empty": "",
        },
    )
    assert head.headers == [("x-latin", "café"), ("x-empty", "")]
    assert len(head.dropped) == 8
    on_the_wire(head.status, head.asgi(0))


def test_a_204_or_304_carries_no_body_and_no_length():
    for status in (204, 304):
        head = plugin_head(status, "text/plain", {})
        assert head.bodiless and b"content-length" not in dict(head.asgi(5))
        on_the_wire(status, head.asgi(5))


def test_headers_are_bounded_in_number():
    head = plugin_head(200, "text/plain", {f"x-h{i}": "v" for i in range(1000)}, RATE)
    assert len(head.headers) == MAX_HEADERS + len(RATE)


header_names = st.text(max_size=12) | st.sampled_from(
    ["Content-Length", "Transfer-Encoding", "Connection", "X-A", "x-a", "Set-Cookie"]
)
header_values = st.text(max_size=20) | st.sampled_from(["chunked", "close", "5", "ok"])


@given(
    status=st.integers(-10, 1100),
    content_type=st.text(max_size=12) | st.just("text/plain"),
    headers=st.dictionaries(header_names, header_values, max_size=8),
    body=st.binary(max_size=8),
)
def test_any_plugin_answer_is_a_502_or_something_h11_sends(status, content_type, headers, body):
    try:
        head = plugin_head(status, content_type, headers, RATE)
    except BadPluginReply:
        return
    body = b"" if head.bodiless else body
    on_the_wire(head.status, head.asgi(len(body)), body)


def test_the_reply_checks_import_no_io_module():
    probe = (
        "import sys, pentarun.gateway.replies, pentarun.gateway.params, "
        "pentarun.gateway.ratelimit; "
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('trio', 'jwt', "
        "'cryptography') or m in ('pentarun.security.stream_tokens', 'pentarun.security.trust')))"
    )
    out = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True
    ).stdout
    assert out.strip() == "[]"
