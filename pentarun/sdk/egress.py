"""The worker's end of the egress lane: a relay from 127.0.0.1:<port> to the core's proxy.

A sandboxed worker has no network but its own loopback, and HTTP clients cannot name a Unix
socket as their proxy. So the SDK listens on 127.0.0.1 and carries each connection, byte for
byte, to the Unix socket named by PENTARUN_EGRESS_SOCKET: the core's proxy for this plugin,
which decides everything (docs/protocol.md, "Egress"). Clients find the relay through the
standard proxy variables (HTTP_PROXY, HTTPS_PROXY and their lowercase forms): urllib, httpx
and requests send http:// requests to it in absolute form and https:// through CONNECT.

The port: PENTARUN_EGRESS_PORT. In the sandbox the core sets a fixed one (3128: the network
namespace is the worker's own, so it is always free) and the proxy variables with it, so they
are there before any plugin code runs. Without the sandbox it is 0: the relay takes a free
port and sets the proxy variables itself when the SDK is imported — early, but a client a
plugin creates before importing `pentarun.sdk` does not see them. If the fixed port is taken
the relay falls back to a free one and says so.

`ensure_relay()` runs when `pentarun.sdk` is imported and again in `Plugin.run()` (once is
enough; later calls return the running relay). The relay is one daemon thread (selectors),
independent of the plugin's trio loop: a handler that blocks the loop with a synchronous
`requests.get` still gets through. It imports nothing of the core.
"""

from __future__ import annotations

import contextlib
import logging
import os
import selectors
import socket
import threading
from collections.abc import MutableMapping

from ..ipc.env import EGRESS_PORT_ENV, EGRESS_SOCKET_ENV, PROXY_ENV

log = logging.getLogger("pentarun.sdk.egress")

HOST = "127.0.0.1"
CHUNK = 64 * 1024
BUFFER = 256 * 1024  # bytes held per direction before the relay stops reading that side
MAX_RELAYED = 64  # connections relayed at once (the core bounds them per plugin too)
CONNECT_TIMEOUT_S = 5.0
SUN_PATH_MAX = 107


class _Pair:
    """One relayed connection: the plugin's TCP socket and the core's Unix socket."""

    def __init__(self, relay: Relay, client: socket.socket, upstream: socket.socket) -> None:
        self.relay = relay
        self.socks = (client, upstream)
        self.buf = (bytearray(), bytearray())  # buf[i]: read from socks[i], for the other
        self.reading = [True, True]  # socks[i] may still give data
        self.writing = [True, True]  # socks[i] may still take data
        self.masks = [0, 0]
        for sock in self.socks:
            sock.setblocking(False)

    def handle(self, i: int, mask: int) -> None:
        other = 1 - i
        if mask & selectors.EVENT_READ and self.reading[i]:
            try:
                data = self.socks[i].recv(CHUNK)
            except (BlockingIOError, InterruptedError):
                data = None
            except OSError:
                data = b""
            if data == b"":
                self.reading[i] = False
            elif data and self.writing[other]:
                self.buf[i].extend(data)  # (dropped when the other side cannot take it)
        if mask & selectors.EVENT_WRITE and self.buf[other]:
            try:
                sent = self.socks[i].send(self.buf[other])
                del self.buf[other][:sent]
            except (BlockingIOError, InterruptedError):
                pass
            except OSError:
                self.writing[i] = False
                self.buf[other].clear()
        self.settle()

    def settle(self) -> None:
        for i in (0, 1):
            other = 1 - i
            if not self.reading[i] and not self.buf[i] and self.writing[other]:
                with contextlib.suppress(OSError):  # end of data: pass the half-close on
                    self.socks[other].shutdown(socket.SHUT_WR)
                self.writing[other] = False
        # reading goes on while the peer sends, even into the void, so it sees no reset
        if not self.reading[0] and not self.reading[1] and not any(self.buf):
            self.close()
            return
        for i in (0, 1):
            other = 1 - i
            mask = 0
            if self.reading[i] and (len(self.buf[i]) < BUFFER or not self.writing[other]):
                mask |= selectors.EVENT_READ
            if self.buf[other] and self.writing[i]:
                mask |= selectors.EVENT_WRITE
            self._register(i, mask)

    def _register(self, i: int, mask: int) -> None:
        selector, sock = self.relay.selector, self.socks[i]
        if mask == self.masks[i]:
            return
        if not mask:
            selector.unregister(sock)
        elif not self.masks[i]:
            selector.register(sock, mask, (self, i))
        else:
            selector.modify(sock, mask, (self, i))
        self.masks[i] = mask

    def close(self) -> None:
        for i, sock in enumerate(self.socks):
            if self.masks[i]:
                self.relay.selector.unregister(sock)
                self.masks[i] = 0
            sock.close()
        self.relay.pairs.discard(self)


class Relay:
    """127.0.0.1:<port> -> the Unix socket at `socket_path`, for every connection."""

    def __init__(self, socket_path: str, max_connections: int = MAX_RELAYED) -> None:
        self.socket_path = socket_path
        self.max_connections = max_connections
        self.selector = selectors.DefaultSelector()
        self.pairs: set[_Pair] = set()
        self._listener: socket.socket | None = None
        self._wake_r, self._wake_w = socket.socketpair()
        self._thread: threading.Thread | None = None
        self._closing = False
        self._dir_fd: int | None = None

    def bind(self, port: int) -> int:
        """Listen on 127.0.0.1:`port` (0: a free one); returns the port."""
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        try:
            listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            listener.bind((HOST, port))
            listener.listen(128)
        except BaseException:
            listener.close()
            raise
        listener.setblocking(False)
        self._listener = listener
        return self.port

    @property
    def port(self) -> int:
        assert self._listener is not None
        return int(self._listener.getsockname()[1])

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.port}"

    def start(self) -> None:
        assert self._listener is not None
        self.selector.register(self._listener, selectors.EVENT_READ, None)
        self.selector.register(self._wake_r, selectors.EVENT_READ, None)
        self._thread = threading.Thread(target=self._run, name="pentarun-egress", daemon=True)
        self._thread.start()

    def close(self) -> None:
        """Stop relaying (open connections end) and wait for the thread."""
        self._closing = True
        with contextlib.suppress(OSError):
            self._wake_w.send(b"x")
        if self._thread is not None:
            self._thread.join(5)

    def _run(self) -> None:
        try:
            while not self._closing:
                for key, mask in self.selector.select():
                    if key.fileobj is self._listener:
                        self._accept()
                    elif key.data is not None:
                        pair, i = key.data
                        if pair in self.pairs:
                            pair.handle(i, mask)
        finally:
            for pair in list(self.pairs):
                pair.close()
            for sock in (self._listener, self._wake_r, self._wake_w):
                if sock is not None:
                    sock.close()
            self.selector.close()
            if self._dir_fd is not None:
                os.close(self._dir_fd)

    def _accept(self) -> None:
        assert self._listener is not None
        try:
            client, _ = self._listener.accept()
        except OSError:
            return
        if len(self.pairs) >= self.max_connections:
            client.close()
            return
        upstream = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        upstream.settimeout(CONNECT_TIMEOUT_S)
        try:
            upstream.connect(self._unix_address())
        except OSError as exc:
            log.warning("egress: cannot reach the core's proxy at %s: %s", self.socket_path, exc)
            upstream.close()
            client.close()
            return
        pair = _Pair(self, client, upstream)
        self.pairs.add(pair)
        pair.settle()

    def _unix_address(self) -> str:
        """The socket's path, through /proc/self/fd/<its directory> when it is too long."""
        if len(os.fsencode(self.socket_path)) <= SUN_PATH_MAX:
            return self.socket_path
        if self._dir_fd is None:
            directory = os.path.dirname(self.socket_path) or "."
            self._dir_fd = os.open(directory, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
        return f"/proc/self/fd/{self._dir_fd}/{os.path.basename(self.socket_path)}"


_relay: Relay | None = None
_lock = threading.Lock()


def _wanted_port(text: str) -> int:
    try:
        port = int(text)
    except ValueError:
        return 0
    return port if 0 <= port <= 65535 else 0


def ensure_relay(environ: MutableMapping[str, str] | None = None) -> Relay | None:
    """Start the relay if this worker has an egress socket (once); None when it has none or
    the relay cannot start (then egress fails for the plugin, which is told in its log)."""
    global _relay  # noqa: PLW0603 (one relay per worker process)
    env = os.environ if environ is None else environ
    with _lock:
        if _relay is not None:
            return _relay
        path = env.get(EGRESS_SOCKET_ENV)
        if not path:
            return None
        wanted = _wanted_port(env.get(EGRESS_PORT_ENV, "0"))
        relay = Relay(path)
        try:
            try:
                relay.bind(wanted)
            except OSError as exc:
                if not wanted:
                    raise
                log.warning("egress: port %d is taken (%s); relaying on a free port", wanted, exc)
                relay.bind(0)
            relay.start()
        except OSError as exc:
            log.warning("egress: the relay cannot start: %s", exc)
            return None
        if relay.port != wanted or any(not env.get(name) for name in PROXY_ENV):
            for name in PROXY_ENV:
                env[name] = relay.url
        _relay = relay
        return relay
