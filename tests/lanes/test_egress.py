"""The egress proxy in-process: a real Unix socket per plugin, a local HTTP server on
127.0.0.1 as the destination, a fake resolver for names (no DNS), a real SQLite store."""

import contextlib
import os
import stat
from contextlib import asynccontextmanager
from functools import partial

import h11
import msgspec
import trio

from pentarun.config import EgressConfig
from pentarun.ipc.env import EGRESS_PORT_ENV, EGRESS_SOCKET_ENV, SANDBOX_EGRESS_SOCKET
from pentarun.lanes.egress import EgressLane, egress_detail, unix_address
from pentarun.lanes.egress_policy import SCOPE
from pentarun.packages.manifest import Manifest, Security
from pentarun.store import records
from pentarun.store.db import open_database

KEY = "probe"


def manifest(scopes=(SCOPE,), domains=("api.example.com",)) -> Manifest:
    return Manifest(
        key=KEY,
        name=KEY,
        version="1.0.0",
        engine=">=0.1",
        traits=["example"],
        security=Security(authentication_required=True, data_classification=["internal"]),
        scopes=list(scopes),
        allowed_domains=list(domains),
    )


# --- the destination: a small HTTP server on 127.0.0.1 ---------------------------------------


async def destination_handler(stream: trio.SocketStream) -> None:
    # the proxy may cut it off: what the tests look at is on the proxy's side
    with contextlib.suppress(trio.BrokenResourceError, h11.RemoteProtocolError):
        await destination(stream)


async def destination(stream: trio.SocketStream) -> None:
    conn = h11.Connection(h11.SERVER)
    request, body = None, b""
    with trio.move_on_after(10):
        while True:
            event = conn.next_event()
            if event is h11.NEED_DATA:
                data = await stream.receive_some(65536)
                conn.receive_data(data)
                if not data and request is None:
                    return
                continue
            if isinstance(event, h11.Request):
                request = event
            elif isinstance(event, h11.Data):
                body += event.data
            elif isinstance(event, h11.EndOfMessage | h11.ConnectionClosed):
                break
    if request is None:
        return
    target = request.target.decode()
    path = target.partition("?")[0]
    headers = [(b"content-type", b"text/plain")]
    if path == "/slow":
        await trio.sleep(30)
    if path == "/big":
        payload = b"x" * 100_000
    elif path == "/echo":
        payload = msgspec.json.encode(
            {
                "method": request.method.decode(),
                "target": target,
                "headers": [[n.decode(), v.decode()] for n, v in request.headers],
                "body": body.decode(),
            }
        )
    elif path == "/chunked-big":
        await stream.send_all(conn.send(h11.Response(status_code=200, headers=headers)))
        for _ in range(100):
            await stream.send_all(conn.send(h11.Data(data=b"y" * 1000)))
        await stream.send_all(conn.send(h11.EndOfMessage()))
        return
    else:
        payload = b"hello from the destination"
    headers.append((b"content-length", str(len(payload)).encode()))
    await stream.send_all(conn.send(h11.Response(status_code=200, headers=headers)))
    await stream.send_all(conn.send(h11.Data(data=payload)) + conn.send(h11.EndOfMessage()))


class Resolver:
    """Names -> addresses without DNS; remembers what it was asked."""

    def __init__(self, table):
        self.table = table
        self.asked: list[str] = []

    async def __call__(self, host, port):
        self.asked.append(host)
        if host not in self.table:
            raise OSError(f"no such name {host!r}")
        return list(self.table[host])


@asynccontextmanager
async def proxy(tmp_path, *, grants=(), scopes=(SCOPE,), table=None, **config):
    async with open_database(tmp_path / "db.sqlite") as db, trio.open_nursery() as nursery:
        listeners = await nursery.start(
            partial(trio.serve_tcp, destination_handler, 0, host="127.0.0.1")
        )
        port = listeners[0].socket.getsockname()[1]
        m = manifest(scopes)
        await records.upsert_plugin(db, KEY, name=KEY, version="1.0.0", state="ENABLED", manifest=m)
        if grants:
            hosts = [g.format(port=port) for g in grants]
            await records.set_egress_grants(db, KEY, hosts, "test")
        resolver = Resolver({"api.example.com": ["127.0.0.1"]} if table is None else table)
        lane = EgressLane(db, EgressConfig(**config), tmp_path, resolver=resolver)
        await nursery.start(lane.run)
        await lane.open(KEY, m)
        try:
            yield Env(lane, db, port, resolver)
        finally:
            nursery.cancel_scope.cancel()


class Env:
    def __init__(self, lane, db, port, resolver):
        self.lane, self.db, self.port, self.resolver = lane, db, port, resolver

    async def connect(self):
        address, fd = unix_address(self.lane.socket_path(KEY))
        try:
            return await trio.open_unix_socket(address)
        finally:
            if fd is not None:
                os.close(fd)

    async def ask(self, raw: bytes, then: bytes = b""):
        """Send one request; the whole answer, parsed (status, headers, body)."""
        stream = await self.connect()
        async with stream:
            await stream.send_all(raw)
            answer = b""
            with trio.fail_after(10):
                while chunk := await stream.receive_some(65536):
                    answer += chunk
                    if then and answer.startswith(b"HTTP/1.1 200 Connection established\r\n\r\n"):
                        await stream.send_all(then)
                        then = b""
        return parse(answer)

    async def get(self, url: str, headers: str = ""):
        return await self.ask(f"GET {url} HTTP/1.1\r\nHost: ignored\r\n{headers}\r\n".encode())

    async def audit(self, type_, at_least=0):
        """The plugin's audit rows of this type (waiting for `at_least` of them: a tunnel's
        row is written when both its ends have closed)."""
        with trio.fail_after(5):
            while True:
                await self.db.flush()
                rows = records.list_audit(self.db, type_=type_, plugin=KEY)
                if len(rows) >= at_least:
                    return rows
                await trio.sleep(0.01)


def parse(answer: bytes):
    head, _, body = answer.partition(b"\r\n\r\n")
    lines = head.decode().split("\r\n")
    status = int(lines[0].split()[1]) if lines[0] else 0
    headers = {k.lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])}
    return status, headers, body


# --- allowed ------------------------------------------------------------------------------------


async def test_a_granted_destination_is_forwarded_and_audited(tmp_path):
    async with proxy(tmp_path, grants=["127.0.0.1:{port}"]) as env:
        status, headers, body = await env.get(f"http://127.0.0.1:{env.port}/hello")
        assert (status, body) == (200, b"hello from the destination")
        assert headers["connection"] == "close"
        (row,) = await env.audit("egress.request", 1)
        assert row.actor == f"plugin:{KEY}" and row.risk_score > 0  # a loopback grant
        assert row.detail["status"] == 200 and row.detail["kind"] == "forward"
        assert (row.detail["host"], row.detail["port"]) == ("127.0.0.1", env.port)
        assert row.detail["bytes_received"] == len(body) and row.detail["address"] == "127.0.0.1"
        assert "error" not in row.detail


async def test_hop_by_hop_headers_stay_behind_and_host_names_the_target(tmp_path):
    async with proxy(tmp_path, grants=["127.0.0.1:{port}"]) as env:
        status, _, body = await env.ask(
            (
                f"POST http://127.0.0.1:{env.port}/echo?q=1 HTTP/1.1\r\nHost: elsewhere\r\n"
                "Proxy-Authorization: Basic c2VjcmV0\r\nConnection: keep-alive, X-Drop\r\n"
                "X-Drop: 1\r\nX-Keep: 2\r\nContent-Length: 5\r\n\r\nhello"
            ).encode()
        )
        assert status == 200
        echoed = msgspec.json.decode(body)
        names = {n for n, _ in echoed["headers"]}
        assert echoed["target"] == "/echo?q=1" and echoed["body"] == "hello"
        assert ["host", f"127.0.0.1:{env.port}"] in echoed["headers"]
        assert ["connection", "close"] in echoed["headers"]
        assert "proxy-authorization" not in names and "x-drop" not in names
        assert "x-keep" in names


async def test_a_connect_tunnel_carries_bytes_both_ways(tmp_path):
    async with proxy(tmp_path, grants=["127.0.0.1:{port}"]) as env:
        inner = b"GET /hello HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
        status, _, body = await env.ask(
            f"CONNECT 127.0.0.1:{env.port} HTTP/1.1\r\nHost: x\r\n\r\n".encode(), then=inner
        )
        assert status == 200
        assert body.startswith(b"HTTP/1.1 200") and body.endswith(b"hello from the destination")
        (row,) = await env.audit("egress.request", 1)
        assert row.detail["kind"] == "connect" and row.detail["status"] == 200
        assert row.detail["bytes_sent"] == len(inner) and row.detail["bytes_received"] > 0


async def test_an_allowed_domain_off_its_ports_reaches_only_granted_addresses(tmp_path):
    async with proxy(tmp_path, grants=["127.0.0.1:{port}"]) as env:
        status, _, _ = await env.get(f"http://api.example.com:{env.port}/hello")
        assert status == 200
        assert env.resolver.asked == ["api.example.com"]


async def test_grants_take_effect_at_once(tmp_path):
    async with proxy(tmp_path) as env:
        url = f"http://127.0.0.1:{env.port}/hello"
        assert (await env.get(url))[0] == 403
        await records.set_egress_grants(env.db, KEY, [f"127.0.0.1:{env.port}"], "test")
        assert (await env.get(url))[0] == 200
        await records.set_egress_grants(env.db, KEY, [], "test")
        assert (await env.get(url))[0] == 403


# --- refused --------------------------------------------------------------------------------------


async def test_an_ungranted_local_destination_is_refused_with_the_reason(tmp_path):
    async with proxy(tmp_path) as env:
        status, headers, body = await env.get(f"http://127.0.0.1:{env.port}/hello")
        assert status == 403
        assert headers["x-pentarun-egress-refused"] == "host_not_allowed"
        assert body.startswith(b"egress refused (host_not_allowed):")
        (row,) = await env.audit("egress.refused", 1)
        assert row.risk_score == 30 and row.detail["reason"] == "host_not_allowed"
        assert (row.detail["host"], row.detail["port"], row.detail["status"]) == (
            "127.0.0.1",
            env.port,
            403,
        )
        assert await env.audit("egress.request") == []
        assert egress_detail(env.db, KEY)["refusals"] == 1


async def test_dns_rebinding_is_refused_without_connecting(tmp_path):
    async with proxy(tmp_path) as env:
        status, headers, _ = await env.ask(
            b"CONNECT api.example.com:443 HTTP/1.1\r\nHost: x\r\n\r\n"
        )
        assert status == 403 and headers["x-pentarun-egress-refused"] == "address_loopback"
        (row,) = await env.audit("egress.refused", 1)
        assert row.risk_score == 80 and row.detail["host"] == "api.example.com"


async def test_a_name_nothing_allows_is_never_resolved(tmp_path):
    async with proxy(tmp_path) as env:
        status, headers, _ = await env.ask(
            b"CONNECT secret.exfil.example.net:443 HTTP/1.1\r\nHost: x\r\n\r\n"
        )
        assert status == 403 and headers["x-pentarun-egress-refused"] == "host_not_allowed"
        assert env.resolver.asked == []


async def test_without_the_scope_nothing_goes_out(tmp_path):
    async with proxy(tmp_path, scopes=(), grants=["127.0.0.1:{port}"]) as env:
        status, headers, _ = await env.get(f"http://127.0.0.1:{env.port}/hello")
        assert status == 403 and headers["x-pentarun-egress-refused"] == "scope_missing"
        (row,) = await env.audit("egress.refused", 1)
        assert row.risk_score == 60


async def test_malformed_requests_are_refused(tmp_path):
    async with proxy(tmp_path) as env:
        for raw, reason in [
            (b"GET /relative HTTP/1.1\r\nHost: x\r\n\r\n", "bad_target"),
            (b"GET https://api.example.com/ HTTP/1.1\r\nHost: x\r\n\r\n", "bad_target"),
            (b"CONNECT api.example.com HTTP/1.1\r\nHost: x\r\n\r\n", "bad_target"),
            (b"CONNECT 127.1:80 HTTP/1.1\r\nHost: x\r\n\r\n", "bad_target"),
            (b"\x16\x03\x01 not http at all\r\n\r\n", "bad_target"),
        ]:
            status, headers, _ = await env.ask(raw)
            assert status == 400 and headers["x-pentarun-egress-refused"] == reason, raw


# --- bounds --------------------------------------------------------------------------------------


async def test_a_response_over_the_limit(tmp_path):
    async with proxy(tmp_path, grants=["127.0.0.1:{port}"], max_response_bytes=1000) as env:
        status, headers, _ = await env.get(f"http://127.0.0.1:{env.port}/big")
        assert status == 502 and headers["x-pentarun-egress-error"] == "response_too_large"
        status, _, body = await env.get(f"http://127.0.0.1:{env.port}/chunked-big")
        assert status == 200 and len(body) < 100_000  # cut off mid-body
        rows = await env.audit("egress.request", 2)
        assert {r.detail["error"] for r in rows} == {"response_too_large"}
        assert max(r.detail["bytes_received"] for r in rows) <= 2000


async def test_a_request_body_over_the_limit(tmp_path):
    async with proxy(tmp_path, grants=["127.0.0.1:{port}"], max_request_bytes=1000) as env:
        status, headers, _ = await env.ask(
            f"POST http://127.0.0.1:{env.port}/echo HTTP/1.1\r\nHost: x\r\n"
            f"Content-Length: 5000\r\n\r\n".encode()
            + b"z" * 5000
        )
        assert status == 413 and headers["x-pentarun-egress-error"] == "request_too_large"


async def test_a_tunnel_over_its_byte_budget_is_closed(tmp_path):
    async with proxy(tmp_path, grants=["127.0.0.1:{port}"], max_tunnel_bytes=100) as env:
        inner = b"GET /big HTTP/1.1\r\nHost: x\r\n\r\n"
        status, _, body = await env.ask(
            f"CONNECT 127.0.0.1:{env.port} HTTP/1.1\r\nHost: x\r\n\r\n".encode(), then=inner
        )
        assert status == 200 and len(body) < 1000
        (row,) = await env.audit("egress.request", 1)
        assert row.detail["error"] == "tunnel_too_large"


async def test_a_request_over_its_time(tmp_path):
    async with proxy(tmp_path, grants=["127.0.0.1:{port}"], request_timeout_s=0.3) as env:
        with trio.fail_after(5):
            status, headers, _ = await env.get(f"http://127.0.0.1:{env.port}/slow")
        assert status == 504 and headers["x-pentarun-egress-error"] == "timeout"
        (row,) = await env.audit("egress.request", 1)
        assert row.detail["error"] == "timeout" and row.detail["status"] == 504


async def test_requests_per_minute_and_refusals_summarised(tmp_path):
    async with proxy(tmp_path, grants=["127.0.0.1:{port}"], requests_per_minute=2) as env:
        url = f"http://127.0.0.1:{env.port}/hello"
        statuses = [(await env.get(url))[0] for _ in range(5)]
        assert statuses == [200, 200, 429, 429, 429]
        (row,) = await env.audit("egress.refused", 1)  # one row a minute, then a summary
        assert row.detail["reason"] == "rate_limited" and row.detail["count"] == 1
        await env.lane.close(KEY)
        rows = await env.audit("egress.refused", 2)
        assert sorted(r.detail["count"] for r in rows) == [1, 2]
        assert egress_detail(env.db, KEY)["refusals"] == 3


async def test_connections_at_once_are_bounded(tmp_path):
    async with proxy(tmp_path, max_connections=1) as env:
        async with await env.connect():  # silent: it holds its slot until the header timeout
            await trio.sleep(0.05)
            status, headers, _ = await env.get("http://api.example.com/")
        assert status == 429 and headers["x-pentarun-egress-refused"] == "too_many_connections"


async def test_a_destination_that_refuses_the_connection(tmp_path):
    async with proxy(tmp_path, grants=["127.0.0.1:1"]) as env:
        status, headers, _ = await env.get("http://127.0.0.1:1/")
        assert status == 502 and headers["x-pentarun-egress-error"] == "connect_failed"
        (row,) = await env.audit("egress.request", 1)
        assert row.detail["error"] == "connect_failed"


async def test_a_name_that_does_not_resolve(tmp_path):
    async with proxy(tmp_path, table={}) as env:
        status, headers, _ = await env.ask(
            b"CONNECT api.example.com:443 HTTP/1.1\r\nHost: x\r\n\r\n"
        )
        assert status == 502 and headers["x-pentarun-egress-error"] == "resolution_failed"
        assert egress_detail(env.db, KEY)["refusals"] == 0  # a failure, not a refusal


# --- the socket and the worker's environment -----------------------------------------------------


async def test_the_socket_is_private_and_goes_with_the_plugin(tmp_path):
    async with proxy(tmp_path) as env:
        path = env.lane.socket_path(KEY)
        assert stat.S_IMODE(path.stat().st_mode) == 0o600 and stat.S_ISSOCK(path.stat().st_mode)
        assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
        await env.lane.open(KEY, manifest(domains=("other.example.com",)))  # updates, same socket
        assert path.exists()
        await env.lane.close(KEY)
        assert not path.exists()


async def test_a_socket_path_too_long_for_sockaddr_un(tmp_path):
    deep = tmp_path / ("d" * 60) / ("e" * 60)
    async with proxy(tmp_path, grants=["127.0.0.1:{port}"], socket_dir=str(deep)) as env:
        assert len(str(env.lane.socket_path(KEY))) > 108
        assert (await env.get(f"http://127.0.0.1:{env.port}/hello"))[0] == 200


def test_the_worker_environment(tmp_path):
    lane = EgressLane(None, EgressConfig(), tmp_path)  # type: ignore[arg-type]
    sandboxed = lane.egress_environment(KEY)
    assert sandboxed[EGRESS_SOCKET_ENV] == SANDBOX_EGRESS_SOCKET
    assert sandboxed[EGRESS_PORT_ENV] == "3128"
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy"):
        assert sandboxed[name] == "http://127.0.0.1:3128"
    plain = lane.egress_environment(KEY, sandboxed=False)
    assert plain == {
        EGRESS_SOCKET_ENV: str(tmp_path / "egress" / f"{KEY}.sock"),
        EGRESS_PORT_ENV: "0",
    }


async def test_a_lan_grant_does_not_open_the_servers_own_host(tmp_path):
    # 127.0.0.0/8 stands for "my LAN": the destination listens on this very host
    async with proxy(tmp_path, grants=["127.0.0.0/8"]) as env:
        status, headers, body = await env.get(f"http://127.0.0.1:{env.port}/hello")
        assert status == 403 and headers["x-pentarun-egress-refused"] == "address_server"
        assert b"only an exact grant" in body
        (row,) = await env.audit("egress.refused", 1)
        assert row.detail["reason"] == "address_server" and row.risk_score == 90


async def test_taking_a_grant_back_cuts_an_open_tunnel(tmp_path):
    async with proxy(tmp_path, grants=["127.0.0.1:{port}"], grant_recheck_s=0.05) as env:
        stream = await env.connect()
        async with stream:
            await stream.send_all(
                f"CONNECT 127.0.0.1:{env.port} HTTP/1.1\r\nHost: x\r\n\r\n".encode()
            )
            with trio.fail_after(5):
                assert (await stream.receive_some(1024)).startswith(b"HTTP/1.1 200")
            await records.set_egress_grants(env.db, KEY, [], "test")
            with trio.fail_after(5):  # the destination waits for a request: only the cut ends it
                while await stream.receive_some(1024):
                    pass
        (row,) = await env.audit("egress.request", 1)
        assert row.detail["error"] == "grant_revoked"
