"""The listener's ASGI app driven directly (no sockets): what the core does before a plugin
sees a request. A fake actor stands in for the plugin and records the typed requests."""

import json
from dataclasses import dataclass, field
from pathlib import Path

import msgspec
import pytest
import trio

from pentarun.config import ListenerConfig, load_config
from pentarun.gateway.listener_app import ListenerSettings, create_listener_app
from pentarun.gateway.ratelimit import Quota
from pentarun.ipc.messages import (
    Call,
    Cancel,
    CoreMessage,
    HttpReply,
    HttpRequest,
    RateLimitInfo,
    Reply,
    StreamEnd,
    StreamStart,
    call_message,
)
from pentarun.packages.manifest import Manifest
from pentarun.security import ha_keys
from pentarun.security.stream_tokens import StreamTokens
from pentarun.store import records
from pentarun.store.db import open_database
from pentarun.supervisor.streams import StreamReply

from .test_replies import on_the_wire

DEFINITION = Path(__file__).resolve().parents[2] / "plugins" / "homeassistant" / "definition.json"
MANIFEST = msgspec.json.decode(DEFINITION.read_bytes(), type=Manifest)
STREAMS = StreamTokens(b"k" * 32)
API = "/api/ha/v1"


@dataclass
class Answer:
    status: int
    headers: dict[str, str]
    body: bytes
    raw_headers: list[tuple[bytes, bytes]] = field(default_factory=list)

    def json(self) -> dict:
        return json.loads(self.body)


class FakePlugin:
    """Answers like the HA plugin would, minting tokens through the real core function."""

    def __init__(self, db) -> None:
        self.db = db
        self.calls: list[tuple[str, str, HttpRequest, bool]] = []
        self.answer: HttpReply | StreamReply | None = None  # answer this to everything, if set

    def get(self, key: str) -> "FakePlugin":
        return self

    async def call(self, handler, property_id, params, deadline_s=None, *, idempotent=False):
        assert isinstance(params, HttpRequest)
        self.calls.append((handler, property_id, params, idempotent))
        if self.answer is not None:
            return self.answer
        if handler == "ha.streams.token":
            issued = ha_keys.issue_stream_token(
                self.db,
                STREAMS,
                params.caller,
                property_id,
                params.path_params["id"],
                stream="main",
                protocol="mjpeg",
            )
            url = f"{params.base_url}{API}/cameras/{params.path_params['id']}/snapshot.jpg"
            issued["urls"] = {"snapshot": f"{url}?token={issued['token']}"}
            return HttpReply(0, 201, msgspec.json.encode(issued), "application/json")
        return Reply(0, {"base_url": params.base_url, "property": property_id})


@dataclass
class Site:
    db: object
    plugin: FakePlugin
    keys: dict[str, str] = field(default_factory=dict)  # name -> key text
    ids: dict[str, str] = field(default_factory=dict)  # name -> key id

    def app(self, entry: str | ListenerConfig | None = None):
        settings = ListenerSettings.of(MANIFEST, entry)
        return create_listener_app(
            "homeassistant", MANIFEST, settings, db=self.db, actors=self.plugin, streams=STREAMS
        )


@pytest.fixture
async def site(tmp_path):
    async with open_database(tmp_path / "db.sqlite") as db:
        await records.create_property(db, "p1", "One")
        s = Site(db, FakePlugin(db))
        for name, limit in (("ha", None), ("small", records.HaKeyRateLimit(2, 60))):
            row, text = await ha_keys.create_key(db, "p1", name, limit)
            s.keys[name], s.ids[name] = text, row.id
        yield s


async def request(
    app,
    method: str,
    path: str,
    *,
    key: str | None = None,
    headers: dict[str, str] | None = None,
    body: bytes = b"",
    query: str = "",
    client: str = "10.0.0.7",
    server: tuple[str, int] = ("192.168.1.20", 8129),
) -> Answer:
    raw = dict(headers or {})
    if key is not None:
        raw["Authorization"] = f"Bearer {key}"
    if body:
        raw["Content-Length"] = str(len(body))
    scope = {
        "type": "http",
        "method": method,
        "scheme": "http",
        "path": path,
        "query_string": query.encode(),
        "headers": [(k.lower().encode(), v.encode()) for k, v in raw.items()],
        "client": (client, 40000),
        "server": server,
    }
    inbox = [{"type": "http.request", "body": body, "more_body": False}]
    sent: list[dict] = []

    async def receive():
        return inbox.pop(0) if inbox else {"type": "http.disconnect"}

    async def send(message):
        sent.append(message)

    await app(scope, receive, send)
    start = sent[0]
    assert start["type"] == "http.response.start"
    headers_out = {k.decode("latin-1"): v.decode("latin-1") for k, v in start["headers"]}
    body_out = b"".join(m.get("body", b"") for m in sent[1:])
    return Answer(start["status"], headers_out, body_out, list(start["headers"]))


async def test_a_request_reaches_the_plugin_typed_and_scoped(site):
    app = site.app()
    answer = await request(
        app, "GET", f"{API}/cameras/front", key=site.keys["ha"], query="fps=2&fps=5"
    )
    assert answer.status == 200
    handler, prop, forwarded, idempotent = site.plugin.calls[-1]
    assert (handler, prop, idempotent) == ("ha.cameras.get", "p1", True)
    assert forwarded.path_params == {"id": "front"} and forwarded.query == {"fps": "5"}
    assert forwarded.auth == "key" and forwarded.body is None
    assert forwarded.rate_limit == RateLimitInfo(600, 60.0)
    assert STREAMS.verify_caller(forwarded.caller, "p1").key_id == site.ids["ha"]
    assert answer.headers["ratelimit-policy"] == '"default";q=600;w=60'
    assert answer.headers["x-ratelimit-remaining"] == "599"


async def test_the_host_header_never_steers_handed_out_urls(site):
    forged = {"Host": "evil.example:666", "X-Forwarded-Host": "evil.example"}
    bound = await request(site.app(), "GET", f"{API}/cameras", key=site.keys["ha"], headers=forged)
    assert bound.json()["base_url"] == "http://192.168.1.20:8129"  # where it arrived
    v6 = await request(
        site.app(), "GET", f"{API}/cameras", key=site.keys["ha"], server=("::1", 8129)
    )
    assert v6.json()["base_url"] == "http://[::1]:8129"
    public = site.app(ListenerConfig(public_url="https://cams.example.org/ha/"))
    answer = await request(public, "GET", f"{API}/cameras", key=site.keys["ha"], headers=forged)
    assert answer.json()["base_url"] == "https://cams.example.org/ha"
    minted = await request(
        public, "POST", f"{API}/cameras/front/stream-token", key=site.keys["ha"], headers=forged
    )
    assert minted.status == 201
    assert minted.json()["urls"]["snapshot"].startswith("https://cams.example.org/ha/api/")
    assert b"evil" not in minted.body


async def test_bodies_are_bounded_and_decoded_safely(site):
    app = site.app(ListenerConfig(max_body_bytes=4096))
    path = f"{API}/cameras/front/stream-token"
    deep = await request(app, "POST", path, key=site.keys["ha"], body=b"[" * 1000 + b"]" * 1000)
    assert deep.status == 400 and deep.json()["error"]["code"] == "bad_request"
    assert "32 levels" in deep.json()["error"]["message"]
    for bad in (b"\xff\xfe{}", b"{not json", b'{"a": 1'):
        answer = await request(app, "POST", path, key=site.keys["ha"], body=bad)
        assert answer.status == 400, bad
    large = await request(app, "POST", path, key=site.keys["ha"], body=b"{}" + b" " * 5000)
    assert large.status == 413 and large.headers["connection"] == "close"
    ok = await request(app, "POST", path, key=site.keys["ha"], body=b'{"ttl_s": 60}')
    assert ok.status == 201
    assert site.plugin.calls[-1][2].body == {"ttl_s": 60}
    assert site.plugin.calls[-1][3] is False  # a POST is never retried


async def test_failed_attempts_block_the_address_even_for_a_correct_key(site):
    app = site.app(ListenerConfig(auth_failures=3, auth_failure_window_s=60))
    for i, headers in enumerate(({"Authorization": "Bearer pvh_wrong"}, {"X-API-Key": "nope"}, {})):
        refused = await request(app, "GET", f"{API}/cameras", headers=headers)
        assert refused.status == 401 and refused.headers["www-authenticate"].startswith("Bearer")
        assert refused.headers["x-ratelimit-remaining"] == str(2 - i)
    blocked = await request(app, "GET", f"{API}/cameras", key=site.keys["ha"])
    assert blocked.status == 429 and blocked.json()["error"]["code"] == "rate_limited"
    assert 1 <= int(blocked.headers["retry-after"]) <= 60
    assert blocked.headers["x-ratelimit-remaining"] == "0"
    assert site.plugin.calls == []  # nothing reached the plugin
    other = await request(app, "GET", f"{API}/cameras", key=site.keys["ha"], client="10.0.0.8")
    assert other.status == 200  # another address is not blocked


async def test_expired_tokens_do_not_count_as_failed_attempts(site):
    app = site.app(ListenerConfig(auth_failures=2))
    expired = STREAMS.issue("p1", "front", "main", "mjpeg", key_id=site.ids["ha"], now=0).token
    for _ in range(5):
        answer = await request(
            app, "GET", f"{API}/cameras/front/snapshot.jpg", query=f"token={expired}"
        )
        assert answer.status == 403 and answer.json()["error"]["details"]["reason"] == "expired"
    forged = await request(app, "GET", f"{API}/cameras/front/snapshot.jpg", query="token=a.b.c")
    assert forged.status == 403
    assert (await request(app, "GET", f"{API}/cameras", key=site.keys["ha"])).status == 200


async def test_a_revoked_keys_token_is_refused(site):
    app = site.app()
    minted = await request(app, "POST", f"{API}/cameras/front/stream-token", key=site.keys["ha"])
    token = minted.json()["token"]
    snapshot = f"{API}/cameras/front/snapshot.jpg"
    assert (await request(app, "GET", snapshot, query=f"token={token}")).status == 200
    assert site.plugin.calls[-1][2].auth == "stream_token" and site.plugin.calls[-1][2].caller == ""
    await records.revoke_ha_key(site.db, site.ids["ha"])
    refused = await request(app, "GET", snapshot, query=f"token={token}")
    assert refused.status == 403
    assert refused.json()["error"]["details"]["reason"] == "key_revoked"
    assert not refused.body.startswith(b"\xff\xd8")


async def test_token_use_spends_the_budget_of_the_key_that_minted_it(site):
    app = site.app()
    small = site.keys["small"]  # its own limit: 2 per 60 s
    minted = await request(app, "POST", f"{API}/cameras/front/stream-token", key=small)
    assert minted.status == 201 and minted.headers["ratelimit-policy"] == '"default";q=2;w=60'
    token = minted.json()["token"]
    snapshot = f"{API}/cameras/front/snapshot.jpg"
    used = await request(app, "GET", snapshot, query=f"token={token}")
    assert used.status == 200 and used.headers["x-ratelimit-remaining"] == "0"
    for attempt in (
        request(app, "GET", snapshot, query=f"token={token}"),
        request(app, "GET", f"{API}/cameras", key=small),
    ):
        limited = await attempt
        assert limited.status == 429 and "retry-after" in limited.headers
    assert (await request(app, "GET", f"{API}/cameras", key=site.keys["ha"])).status == 200


async def test_the_listeners_limit_applies_unless_the_key_has_its_own(site):
    app = site.app(ListenerConfig(rate_limit=3, rate_window_s=30))
    statuses = [
        (await request(app, "GET", f"{API}/cameras", key=site.keys["ha"])).status for _ in range(4)
    ]
    assert statuses == [200, 200, 200, 429]
    assert site.plugin.calls[-1][2].rate_limit == RateLimitInfo(3, 30.0)
    small = await request(app, "GET", f"{API}/cameras", key=site.keys["small"])
    assert small.headers["ratelimit-policy"] == '"default";q=2;w=60'


async def test_errors_are_rendered_in_one_place(site):
    app = site.app()
    missing = await request(app, "GET", f"{API}/nothing", key=site.keys["ha"])
    assert missing.status == 404 and missing.json()["error"]["code"] == "not_found"
    assert "ratelimit" in missing.headers
    wrong = await request(app, "DELETE", f"{API}/cameras", key=site.keys["ha"])
    assert wrong.status == 405
    too_many = "&".join(f"q{i}=1" for i in range(100))
    query = await request(app, "GET", f"{API}/cameras", key=site.keys["ha"], query=too_many)
    assert query.status == 400


def test_settings_come_from_config_over_the_manifest():
    default = ListenerSettings.of(MANIFEST, None)
    assert default.bind == "0.0.0.0:8129" and default.quota == Quota(600, 60)
    assert default.public_url == "" and default.auth_failures == 20
    plain = ListenerSettings.of(MANIFEST, "127.0.0.1:0")
    assert plain.bind == "127.0.0.1:0" and plain.quota == Quota(600, 60)
    table = ListenerSettings.of(MANIFEST, ListenerConfig(bind=":1", rate_limit=50))
    assert table.quota == Quota(50, 60) and table.bind == ":1"


def test_the_listeners_setting_takes_a_string_or_a_table(tmp_path):
    config = tmp_path / "pentarun.toml"
    config.write_text(
        '[listeners]\nother = "127.0.0.1:9000"\n'
        '[listeners.homeassistant]\nbind = "0.0.0.0:8129"\n'
        'public_url = "https://ha.example.org"\nrate_limit = 900\nrate_window_s = 60\n'
    )
    listeners = load_config(config, environ={}).listeners
    assert listeners["other"] == "127.0.0.1:9000"
    assert listeners["homeassistant"] == ListenerConfig(
        bind="0.0.0.0:8129", public_url="https://ha.example.org", rate_limit=900, rate_window_s=60
    )
    env = {"PENTARUN_LISTENERS__HOMEASSISTANT": "127.0.0.1:0"}
    assert load_config(environ=env).listeners == {"homeassistant": "127.0.0.1:0"}
    for bad in ('public_url = "ftp://x"', "rate_limit = 0", 'public_url = "http://a b"'):
        config.write_text(f"[listeners.homeassistant]\n{bad}\n")
        with pytest.raises(Exception, match="invalid configuration"):
            load_config(config, environ={})


def test_a_listener_call_carries_its_request_typed_across_the_boundary():
    request = HttpRequest(
        "POST",
        f"{API}/cameras/front/stream-token",
        {"id": "front"},
        {"a": "1"},
        {"ttl_s": 60},
        "http://h:1",
        "key",
        "c1.x.1.y",
        RateLimitInfo(600, 60),
    )
    wire = msgspec.msgpack.encode(call_message(7, "ha.streams.token", "p1", request, 5000))
    decoded = msgspec.msgpack.Decoder(CoreMessage).decode(wire)
    assert isinstance(decoded, Call) and decoded.http == request and decoded.params == {}
    assert decoded.http.handler_params() == {
        "method": "POST",
        "path": {"id": "front"},
        "query": {"a": "1"},
        "body": {"ttl_s": 60},
        "base_url": "http://h:1",
        "auth": "key",
        "caller": "c1.x.1.y",
        "rate_limit": {"limit": 600, "window_s": 60},
    }
    plain = msgspec.msgpack.Decoder(CoreMessage).decode(
        msgspec.msgpack.encode(call_message(8, "ha.info", "p1", {"x": 1}, 5000))
    )
    assert isinstance(plain, Call) and plain.http is None and plain.params == {"x": 1}


# --- what the plugin answers is checked before the HTTP server sees it ----------------------


def wire(answer: Answer) -> bytes:
    """The answer through h11, as hypercorn sends it (names and values stripped first)."""
    headers = [(k.strip(), v.strip()) for k, v in answer.raw_headers]
    return on_the_wire(answer.status, headers, answer.body)


@pytest.mark.parametrize("status", [99, 100, 199, 600, 1000])
async def test_a_plugin_status_http_cannot_carry_is_a_502(site, status):
    site.plugin.answer = HttpReply(0, status, b"x", "text/plain")
    answer = await request(site.app(), "GET", f"{API}/cameras", key=site.keys["ha"])
    assert answer.status == 502 and answer.json()["error"]["code"] == "bad_plugin_reply"
    assert answer.headers["x-ratelimit-remaining"] == "599"  # still the listener's headers
    wire(answer)


async def test_plugin_headers_http_cannot_carry_are_dropped_never_a_crash(site):
    site.plugin.answer = HttpReply(
        0,
        200,
        b"abc",
        "text/plain",
        {
            "Content-Length": "99",
            "Transfer-Encoding": "chunked",
            "Connection": "close",
            "X-Euro": "€",
            "X-Split": "a\r\nSet-Cookie: evil=1",
            "Bad Name": "x",
            "": "empty",
            "X-RateLimit-Remaining": "1000000",
            "X-Camera": "front",
        },
    )
    answer = await request(site.app(), "GET", f"{API}/cameras", key=site.keys["ha"])
    assert answer.status == 200 and answer.body == b"abc"
    names = [k for k, _ in answer.raw_headers]
    assert names.count(b"content-length") == 1 and names.count(b"x-ratelimit-remaining") == 1
    assert (
        answer.headers["x-ratelimit-remaining"] == "599" and answer.headers["x-camera"] == "front"
    )
    for gone in (b"transfer-encoding", b"connection", b"x-euro", b"x-split", b"bad name", b""):
        assert gone not in names
    sent = wire(answer)
    assert b"evil" not in sent and sent.endswith(b"abc")


async def test_a_204_from_a_plugin_goes_out_without_a_body(site):
    site.plugin.answer = HttpReply(0, 204, b"ignored", "text/plain")
    answer = await request(site.app(), "GET", f"{API}/cameras", key=site.keys["ha"])
    assert answer.status == 204 and answer.body == b""
    wire(answer)


async def test_the_manifest_decides_which_listener_calls_may_run_twice(site):
    declared = msgspec.structs.replace(MANIFEST, idempotent=["ha.streams.token"])
    app = create_listener_app(
        "homeassistant",
        declared,
        ListenerSettings.of(declared, None),
        db=site.db,
        actors=site.plugin,
        streams=STREAMS,
    )
    await request(app, "POST", f"{API}/cameras/front/stream-token", key=site.keys["ha"])
    await request(app, "GET", f"{API}/cameras", key=site.keys["ha"])
    assert [(c[0], c[3]) for c in site.plugin.calls] == [
        ("ha.streams.token", True),  # a POST, but the manifest lists its handler
        ("ha.cameras.list", True),  # a GET route
    ]


async def test_a_path_with_a_trailing_newline_matches_no_route(site):
    answer = await request(site.app(), "GET", f"{API}/cameras\n", key=site.keys["ha"])
    assert answer.status == 404 and site.plugin.calls == []


async def test_failed_attempts_count_for_the_whole_ipv6_64(site):
    app = site.app(ListenerConfig(auth_failures=3))
    for host in ("1", "2", "3"):
        refused = await request(app, "GET", f"{API}/cameras", client=f"2001:db8:0:7::{host}")
        assert refused.status == 401
    rotated = await request(
        app, "GET", f"{API}/cameras", key=site.keys["ha"], client="2001:db8:0:7:abcd::42"
    )
    assert rotated.status == 429 and site.plugin.calls == []
    elsewhere = await request(
        app, "GET", f"{API}/cameras", key=site.keys["ha"], client="2001:db8:0:8::1"
    )
    assert elsewhere.status == 200


async def test_a_stream_the_plugin_starts_badly_is_a_502_and_is_stopped(site):
    told: list[object] = []
    for start in (StreamStart(7, status=1000), StreamStart(7, 200, "x\r\ny"), StreamStart(7, 204)):
        send, receive = trio.open_memory_channel(4)
        send.send_nowait(b"frame")
        send.send_nowait(StreamEnd(7))
        site.plugin.answer = StreamReply(start, receive, told.append)
        path = f"{API}/cameras/front/mjpeg"
        answer = await request(site.app(), "GET", path, key=site.keys["ha"])
        assert answer.status == 502 and answer.json()["error"]["code"] == "bad_plugin_reply"
        assert told.pop() == Cancel(7)  # the worker is told to stop at once
    good = StreamStart(7, 200, "multipart/x-mixed-replace", {"Content-Length": "1", "X-A": "b"})
    send, receive = trio.open_memory_channel(4)
    send.send_nowait(b"frame")
    send.send_nowait(StreamEnd(7))
    site.plugin.answer = StreamReply(good, receive, told.append)
    answer = await request(site.app(), "GET", f"{API}/cameras/front/mjpeg", key=site.keys["ha"])
    assert answer.status == 200 and answer.body == b"frame" and answer.headers["x-a"] == "b"
    assert b"content-length" not in [k for k, _ in answer.raw_headers]
