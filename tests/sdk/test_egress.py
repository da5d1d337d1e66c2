"""The worker's egress relay: 127.0.0.1:<port> carried byte for byte to a Unix socket, and the
proxy variables it leaves for HTTP clients."""

import logging
import socket
import threading
import urllib.error
import urllib.request
from pathlib import Path

import pytest
import trio

from pentarun.ipc.env import EGRESS_PORT_ENV, EGRESS_SOCKET_ENV, PROXY_ENV
from pentarun.sdk import egress
from pentarun.sdk.egress import Relay, ensure_relay

from ..lanes.test_egress import KEY, proxy
from .test_public_surface import _imported_modules


class UnixServer:
    """A Unix socket server in a thread: per connection, `reply(data received until EOF)`."""

    def __init__(self, path: Path, reply=lambda data: data):
        self.path = path
        self.reply = reply
        self.sock = socket.socket(socket.AF_UNIX)
        self.sock.bind(str(path))
        self.sock.listen()
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self):
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self._one, args=(conn,), daemon=True).start()

    def _one(self, conn):
        with conn:
            data = b""
            while chunk := conn.recv(65536):
                data += chunk
            conn.sendall(self.reply(data))

    def close(self):
        self.sock.close()


def exchange(port: int, data: bytes) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=10) as conn:
        conn.sendall(data)
        conn.shutdown(socket.SHUT_WR)  # the half-close travels through the relay
        answer = b""
        while chunk := conn.recv(65536):
            answer += chunk
    return answer


@pytest.fixture
def relay_of(tmp_path):
    relays = []

    def make(reply=lambda data: data, port=0):
        server = UnixServer(tmp_path / "egress.sock", reply)
        relay = Relay(str(server.path))
        relay.bind(port)
        relay.start()
        relays.append((relay, server))
        return relay

    yield make
    for relay, server in relays:
        relay.close()
        server.close()


def test_bytes_go_both_ways_with_half_close(relay_of):
    relay = relay_of(lambda data: b"got " + data)
    assert exchange(relay.port, b"hello") == b"got hello"


def test_big_transfers_and_many_connections(relay_of):
    relay = relay_of(lambda data: data[::-1])
    payload = bytes(range(256)) * 8192  # 2 MiB: more than the relay buffers
    assert exchange(relay.port, payload) == payload[::-1]
    results = [None] * 20

    def one(i):
        results[i] = exchange(relay.port, f"n{i}".encode())

    threads = [threading.Thread(target=one, args=(i,)) for i in range(20)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    assert results == [f"n{i}".encode()[::-1] for i in range(20)]


def test_without_the_core_a_connection_just_ends(tmp_path):
    relay = Relay(str(tmp_path / "nobody.sock"))
    relay.bind(0)
    relay.start()
    try:
        try:
            answer = exchange(relay.port, b"GET http://x/ HTTP/1.1\r\n\r\n")
        except ConnectionResetError:
            answer = b""
        assert answer == b""  # the client sees its connection end (and the log says why)
    finally:
        relay.close()


@pytest.fixture
def fresh(monkeypatch):
    """ensure_relay's process-wide relay, reset for the test and closed after it."""
    monkeypatch.setattr(egress, "_relay", None)
    yield
    if egress._relay is not None:
        egress._relay.close()


def test_no_egress_socket_no_relay(fresh):
    assert ensure_relay({}) is None


def test_a_free_port_sets_the_proxy_variables(fresh, tmp_path):
    env = {EGRESS_SOCKET_ENV: str(tmp_path / "x.sock"), EGRESS_PORT_ENV: "0"}
    relay = ensure_relay(env)
    assert relay is not None and relay.port > 0
    assert all(env[name] == f"http://127.0.0.1:{relay.port}" for name in PROXY_ENV)
    assert ensure_relay(env) is relay  # once per process


def test_a_fixed_port_keeps_the_variables_the_core_set(fresh, tmp_path):
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    url = f"http://127.0.0.1:{port}"
    env = {EGRESS_SOCKET_ENV: str(tmp_path / "x.sock"), EGRESS_PORT_ENV: str(port)}
    env.update(dict.fromkeys(PROXY_ENV, url))
    relay = ensure_relay(env)
    assert relay is not None and relay.port == port
    assert all(env[name] == url for name in PROXY_ENV)


def test_a_taken_fixed_port_falls_back_to_a_free_one(fresh, tmp_path, caplog):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        env = {EGRESS_SOCKET_ENV: str(tmp_path / "x.sock"), EGRESS_PORT_ENV: str(port)}
        env.update(dict.fromkeys(PROXY_ENV, f"http://127.0.0.1:{port}"))
        with caplog.at_level(logging.WARNING, "pentarun.sdk.egress"):
            relay = ensure_relay(env)
        assert relay is not None and relay.port != port
        assert all(env[name] == relay.url for name in PROXY_ENV)
        assert "is taken" in caplog.text


def test_the_relay_imports_nothing_of_the_core():
    path = Path(egress.__file__)
    imported = {m for m in _imported_modules(path) if m.startswith("pentarun")}
    assert imported and all(m.startswith("pentarun.ipc.") for m in imported), imported


async def test_urllib_through_the_relay_and_the_core_proxy(tmp_path):
    """The whole lane in one process: urllib -> relay -> the plugin's Unix socket -> the
    core's proxy -> a local HTTP server (granted) or a refusal (not granted)."""
    async with proxy(tmp_path, grants=["127.0.0.1:{port}"]) as env:
        relay = Relay(str(env.lane.socket_path(KEY)))
        relay.bind(0)
        relay.start()
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({"http": relay.url}))

        def fetch(url):
            try:
                with opener.open(url, timeout=10) as response:
                    return response.status, response.read()
            except urllib.error.HTTPError as exc:
                return exc.code, exc.read()

        try:
            granted = f"http://127.0.0.1:{env.port}/hello"
            assert await trio.to_thread.run_sync(fetch, granted) == (
                200,
                b"hello from the destination",
            )
            status, body = await trio.to_thread.run_sync(fetch, "http://10.1.2.3:8080/")
            assert status == 403 and b"host_not_allowed" in body
        finally:
            await trio.to_thread.run_sync(relay.close)
