"""The egress lane: each running plugin's only way out, an HTTP proxy on its own Unix socket.

    lane = EgressLane(db, config.egress, data_dir)      await nursery.start(lane.run)
    await lane.open(key, manifest)   (before its worker starts)    await lane.close(key)
    lane.egress_environment(key, sandboxed=...)  -> the worker's environment variables

Who asks is known from the socket, never from the request: `<socket_dir>/<key>.sock` (mode
0600, in a 0700 directory, owned by `socket_owner(key)` when given) is created by the core
and reaches only that plugin's worker (the sandbox bind-mounts it at SANDBOX_EGRESS_SOCKET).
Inside the worker the SDK relays 127.0.0.1:<port> to it (sdk/egress.py), so ordinary clients
(urllib, httpx, requests) reach it through the standard proxy variables.

Each connection carries one request: `CONNECT host:port` (a tunnel, for https) or an
absolute-form `GET http://host/path` (any method, forwarded). For each, in this order:
  1. connections at once (`max_connections`) and requests per minute (`requests_per_minute`);
  2. the target parses; 3. the policy admits it (egress_policy.admit: scope, allowed domains,
     operator grants) — a name nothing allows is never resolved;
  4. the name is resolved here, in the core (trio's getaddrinfo, in a thread), and the policy
     chooses among the addresses (loopback, private, link-local, metadata... need a grant);
  5. the core dials the chosen address itself (never the name again), within
     `connect_timeout_s`; 6. the request runs within its bounds (egress_http.py).
A refusal is answered 400/403/429 with a short text naming the reason (also in the
`X-Pentarun-Egress-Refused` header), audited `egress.refused` with its risk score (before the
answer is sent) and counted for the plugin's detail (rate and connection refusals: one row per
reason per minute, carrying `count`). Every request that got through the policy is audited
`egress.request` (host, port, address, status, bytes each way, duration, and `error` when it
failed: 413/502/504 with `X-Pentarun-Egress-Error`, or cut off past a bound). Grants are
read from the store on every request: a change takes effect at once; an open connection is
checked again every `grant_recheck_s` and cut (`grant_revoked`) once nothing allows it. A
connection that turns out to reach the server's own host is closed before a byte is sent
unless an operator named that address and port exactly (`address_server`).
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import socket
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import h11
import trio

from ..config import EgressConfig
from ..ipc.env import (
    EGRESS_PORT_ENV,
    EGRESS_SOCKET_ENV,
    PROXY_ENV,
    SANDBOX_EGRESS_PORT,
    SANDBOX_EGRESS_SOCKET,
)
from ..packages.manifest import Manifest
from ..store import records
from ..store.db import Database
from .calls import clip
from .egress_addresses import (
    AddressClass,
    Target,
    TargetError,
    classify,
    ip,
    parse_authority,
    parse_proxy_url,
    plain,
)
from .egress_http import (
    LINGER_S,
    Client,
    Limits,
    Outcome,
    answer_and_close,
    forward,
    simple_response,
    tunnel,
)
from .egress_policy import (
    Admitted,
    Grant,
    RateBucket,
    Reason,
    Refusal,
    RefusalSampler,
    admit,
    choose,
    load_grants,
    own_host_refusal,
    still_allowed,
)

log = logging.getLogger(__name__)

Resolver = Callable[[str, int], Awaitable[list[str]]]
SAMPLED = frozenset({Reason.RATE_LIMITED, Reason.TOO_MANY_CONNECTIONS})
SAMPLE_WINDOW_S = 60.0
KEY = re.compile(r"^[a-z][a-z0-9-]{1,62}\Z")
SUN_PATH_MAX = 107  # bytes of a Unix socket path (longer ones are reached through /proc)
ALLOWED_RISK = 0
OVER_LIMIT_LINGER_S = 0.1
GRANTED_RISK = 10  # an allowed request that reached a non-public address through a grant


async def resolve(host: str, port: int) -> list[str]:
    """The addresses of `host`, in the resolver's order (trio runs getaddrinfo in a thread)."""
    infos = await trio.socket.getaddrinfo(host, port, type=trio.socket.SOCK_STREAM)
    return list(dict.fromkeys(str(info[4][0]) for info in infos))


def unix_address(path: Path) -> tuple[str, int | None]:
    """A path to bind or connect to, and a directory fd to close afterwards: a path longer
    than a sockaddr_un holds is reached through /proc/self/fd/<its directory>."""
    if len(os.fsencode(path)) <= SUN_PATH_MAX:
        return str(path), None
    fd = os.open(path.parent, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
    return f"/proc/self/fd/{fd}/{path.name}", fd


def listen_unix(path: Path, owner: int | None) -> socket.socket:
    """A listening Unix socket at `path` (a stale one replaced), mode 0600, chowned to
    `owner` when given. Blocking: call it off the trio thread."""
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    path.unlink(missing_ok=True)
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    address, fd = unix_address(path)
    try:
        sock.bind(address)
        os.chmod(path, 0o600)
        if owner is not None:
            os.chown(path, owner, -1)
        sock.listen(128)
    except BaseException:
        sock.close()
        raise
    finally:
        if fd is not None:
            os.close(fd)
    return sock


def egress_environment(socket_path: str, port: int) -> dict[str, str]:
    """The worker's egress variables: its proxy socket, the relay port and, for a fixed port,
    the standard proxy variables (with port 0 the SDK sets those once it has a port)."""
    env = {EGRESS_SOCKET_ENV: socket_path, EGRESS_PORT_ENV: str(port)}
    if port:
        env.update({name: f"http://127.0.0.1:{port}" for name in PROXY_ENV})
    return env


def egress_detail(db: Database, key: str) -> dict[str, Any]:
    """The `egress` object of a plugin's detail: its grants and its refused requests."""
    row = records.get_egress(db, key)
    return {
        "grants": row.hosts,
        "refusals": row.refusals,
        "last_refused_at": row.last_refused_at,
        "grants_updated_at": row.updated_at,
        "grants_updated_by": row.updated_by,
    }


class EgressLane:
    def __init__(
        self,
        db: Database,
        config: EgressConfig,
        data_dir: Path,
        *,
        socket_owner: Callable[[str], int | None] = lambda key: None,
        resolver: Resolver = resolve,
    ) -> None:
        """`socket_owner(key)`: the uid a plugin's socket belongs to (its sandbox uid when the
        server runs as root), None to keep the server's."""
        self.db = db
        self.config = config
        self.socket_dir = Path(config.socket_dir) if config.socket_dir else data_dir / "egress"
        self.socket_owner = socket_owner
        self.resolver = resolver
        self.limits = Limits(
            config.max_request_bytes, config.max_response_bytes, config.max_tunnel_bytes
        )
        self._proxies: dict[str, PluginProxy] = {}
        self._changing = trio.Lock()  # one open or close at a time
        self._grants: dict[str, tuple[tuple[str, ...], tuple[Grant, ...]]] = {}
        self._nursery: trio.Nursery | None = None

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Own every plugin's proxy until cancelled; then close them all."""
        try:
            async with trio.open_nursery() as nursery:
                self._nursery = nursery
                task_status.started()
                await trio.sleep_forever()
        finally:
            self._nursery = None
            for proxy in list(self._proxies.values()):
                proxy.shut()
            self._proxies.clear()

    def socket_path(self, key: str) -> Path:
        if not KEY.fullmatch(key):
            raise ValueError(f"not a plugin key: {key!r}")
        return self.socket_dir / f"{key}.sock"

    def egress_environment(self, key: str, *, sandboxed: bool = True) -> dict[str, str]:
        """What the worker of `key` must be started with. Sandboxed: the socket as mounted
        inside (SANDBOX_EGRESS_SOCKET, bind-mount `socket_path(key)` there) and the fixed
        relay port, with the proxy variables. Unsandboxed: the socket's own path and port 0
        (two workers on one network cannot share a port; the SDK picks one and sets the
        proxy variables itself, so clients created before the SDK is imported miss them)."""
        if sandboxed:
            return egress_environment(SANDBOX_EGRESS_SOCKET, SANDBOX_EGRESS_PORT)
        return egress_environment(str(self.socket_path(key)), 0)

    async def open(self, key: str, manifest: Manifest) -> None:
        """Serve the plugin's proxy socket (a plugin already served gets the new manifest;
        its socket stays, so a worker restart keeps its mount)."""
        async with self._changing:
            proxy = self._proxies.get(key)
            if proxy is not None:
                proxy.manifest = manifest
                return
            if self._nursery is None:
                raise RuntimeError("the egress lane is not running")
            path = self.socket_path(key)
            owner = await trio.to_thread.run_sync(self.socket_owner, key)  # may write it down
            sock = await trio.to_thread.run_sync(listen_unix, path, owner)
            proxy = PluginProxy(self, key, manifest, path, sock)
            self._proxies[key] = proxy
            await self._nursery.start(proxy.serve)

    async def close(self, key: str) -> None:
        """Stop serving the plugin (its open connections end) and remove its socket."""
        async with self._changing:
            proxy = self._proxies.pop(key, None)
            if proxy is not None:
                proxy.cancel.cancel()
                await proxy.closed.wait()

    def grants(self, key: str) -> tuple[Grant, ...]:
        """The plugin's operator grants as stored now (parsed once per change)."""
        hosts = tuple(records.egress_grants(self.db, key))
        cached = self._grants.get(key)
        if cached is None or cached[0] != hosts:
            cached = (hosts, load_grants(hosts))
            self._grants[key] = cached
        return cached[1]


class PluginProxy:
    """One plugin's proxy: its socket, its bounds, its audit rows."""

    def __init__(
        self, lane: EgressLane, key: str, manifest: Manifest, path: Path, sock: socket.socket
    ) -> None:
        self.lane = lane
        self.key = key
        self.manifest = manifest
        self.path = path
        self.listener = trio.SocketListener(trio.socket.from_stdlib_socket(sock))
        self.bucket = RateBucket(lane.config.requests_per_minute)
        self.sampler = RefusalSampler(SAMPLE_WINDOW_S)
        self.active = 0
        self.cancel = trio.CancelScope()
        self.closed = trio.Event()

    async def serve(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        try:
            with self.cancel:
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(self._flush_summaries)
                    task_status.started()  # the socket is listening already
                    await trio.serve_listeners(
                        self._connection, [self.listener], handler_nursery=nursery
                    )
        finally:
            self.shut()
            with trio.CancelScope(shield=True):
                await self.listener.aclose()

    def shut(self) -> None:
        """Remove the socket and write the refusals still counted (idempotent)."""
        if self.closed.is_set():
            return
        with contextlib.suppress(OSError):
            self.path.unlink(missing_ok=True)
        for reason, n in self.sampler.due(trio.current_time(), everything=True).items():
            self._audit_refusal(reason, _summary(reason), n)
        self.closed.set()

    async def _flush_summaries(self) -> None:
        while True:
            await trio.sleep(SAMPLE_WINDOW_S / 4)
            for reason, n in self.sampler.due(trio.current_time()).items():
                self._audit_refusal(reason, _summary(reason), n)

    # --- one connection ------------------------------------------------------------------

    async def _connection(self, stream: trio.SocketStream) -> None:
        config = self.lane.config
        async with stream:
            if self.active >= config.max_connections:
                await self._refuse(
                    stream,
                    Refusal(
                        Reason.TOO_MANY_CONNECTIONS,
                        f"at most {config.max_connections} connections at once",
                    ),
                )
                return
            self.active += 1
            try:
                await self._request(stream)
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                pass  # the plugin went away; what it did is audited where it was decided
            except Exception:  # one connection never takes the lane (and the server) down
                log.exception("egress proxy of %s: a connection failed", self.key)
            finally:
                self.active -= 1

    async def _request(self, stream: trio.SocketStream) -> None:
        config = self.lane.config
        client = Client(stream, config.max_header_bytes)
        request: h11.Request | None = None
        with trio.move_on_after(config.header_timeout_s):
            try:
                request = await client.head()
            except h11.RemoteProtocolError as exc:
                await self._refuse(stream, Refusal(Reason.BAD_TARGET, f"bad request: {exc}"))
                return
        if request is None:
            return  # closed, or silent for header_timeout_s: nothing was asked
        method = request.method.decode("ascii", "replace")
        if not self.bucket.take(trio.current_time()):
            per_minute = config.requests_per_minute
            await self._refuse(
                stream,
                Refusal(Reason.RATE_LIMITED, f"at most {per_minute} requests a minute"),
                method=method,
            )
            return
        connect = request.method == b"CONNECT"
        try:
            raw = request.target.decode("ascii")
            target, path = (parse_authority(raw), "") if connect else parse_proxy_url(raw)
        except (UnicodeDecodeError, TargetError) as exc:
            await self._refuse(stream, Refusal(Reason.BAD_TARGET, str(exc)), method=method)
            return
        decided = admit(self.manifest.scopes, self.manifest.allowed_domains, self._grants(), target)
        if isinstance(decided, Refusal):
            await self._refuse(stream, decided, method=method, target=target)
            return
        limit = config.tunnel_timeout_s if connect else config.request_timeout_s
        started = trio.current_time()
        outcome = Outcome()
        address, granted = "", False
        with trio.move_on_after(limit) as scope:
            dialled = await self._dial(client, decided, method, outcome)
            if dialled is None:
                return
            upstream, address, granted = dialled
            async with upstream, trio.open_nursery() as nursery:
                nursery.start_soon(self._watch_grants, target, address, outcome, nursery)
                try:
                    if connect:
                        await tunnel(client, upstream, self.lane.limits, outcome)
                    else:
                        await forward(
                            client,
                            request,
                            upstream,
                            path=path.encode("ascii"),
                            host=_host_header(target).encode("ascii"),
                            limits=self.lane.limits,
                            outcome=outcome,
                        )
                except h11.ProtocolError as exc:
                    await client.fail(outcome, 400, "bad_request", f"egress: {exc}")
                except (trio.BrokenResourceError, trio.ClosedResourceError):
                    outcome.error = outcome.error or "connection_lost"
                nursery.cancel_scope.cancel()
        if scope.cancelled_caught:
            await client.fail(outcome, 504, "timeout", f"egress: over {limit:g} s")
        self._audit_request(method, target, address, outcome, started, granted=granted)

    async def _dial(
        self, client: Client, admitted: Admitted, method: str, outcome: Outcome
    ) -> tuple[trio.SocketStream, str, bool] | None:
        """Resolve (names only), let the policy choose, connect: the stream, the address and
        whether a grant made it reachable; None when refused or failed (answered and audited
        here)."""
        target = admitted.target
        timeout = self.lane.config.connect_timeout_s
        started = trio.current_time()
        addresses: list[str] = []
        with trio.move_on_after(timeout) as scope:
            if target.literal is None:
                try:
                    addresses = await self.lane.resolver(target.host, target.port)
                except OSError as exc:
                    await client.fail(outcome, 502, "resolution_failed", f"egress: {exc}")
        if scope.cancelled_caught:
            await client.fail(outcome, 504, "resolution_timeout", "egress: resolution timed out")
        if outcome.error:
            self._audit_request(method, target, "", outcome, started)
            return None
        chosen = choose(admitted, self._grants(), addresses)
        if isinstance(chosen, Refusal):
            if chosen.reason is Reason.NO_ADDRESS:
                await client.fail(outcome, 502, "no_address", f"egress: {chosen.message}")
                self._audit_request(method, target, "", outcome, started)
            else:
                await self._refuse(client.stream, chosen, method=method, target=target)
            return None
        errors: list[str] = []
        with trio.move_on_after(timeout):
            for address in chosen.addresses:
                try:
                    stream = await trio.open_tcp_stream(address, target.port)
                except OSError as exc:
                    errors.append(f"{address}: {exc.strerror or exc}")
                    continue
                refusal = own_host_refusal(chosen, address, reaches_own_host(stream))
                if refusal is None:
                    return stream, address, chosen.granted
                await stream.aclose()  # nothing was sent
                await self._refuse(client.stream, refusal, method=method, target=target)
                return None
        error = "; ".join(errors) or "timed out"
        await client.fail(outcome, 502, "connect_failed", f"egress: cannot connect: {error}")
        self._audit_request(method, target, "", outcome, started)
        return None

    def _grants(self) -> tuple[Grant, ...]:
        return self.lane.grants(self.key)

    async def _watch_grants(
        self, target: Target, address: str, outcome: Outcome, nursery: trio.Nursery
    ) -> None:
        """Cut the connection once what allowed it no longer does (a grant taken back)."""
        manifest = self.manifest
        while True:
            await trio.sleep(self.lane.config.grant_recheck_s)
            grants = self._grants()
            if not still_allowed(
                manifest.scopes, manifest.allowed_domains, grants, target, address
            ):
                outcome.error = Reason.GRANT_REVOKED.value
                nursery.cancel_scope.cancel()
                return

    # --- answers and audit rows ----------------------------------------------------------

    async def _refuse(
        self,
        stream: trio.SocketStream,
        refusal: Refusal,
        *,
        method: str = "",
        target: Target | None = None,
    ) -> None:
        n = (
            self.sampler.note(refusal.reason, trio.current_time())
            if refusal.reason in SAMPLED
            else 1
        )
        if n:  # audited before the answer: when the plugin reads it, the row is written
            self._audit_refusal(refusal.reason, refusal.message, n, method=method, target=target)
        text = f"egress refused ({refusal.reason.value}): {refusal.message}"
        header = ("X-Pentarun-Egress-Refused", refusal.reason.value)
        answer = simple_response(refusal.reason.status, text, [header])
        # beyond the connection limit a connection is let go almost at once (its descriptor
        # is the core's, and the plugin could open many)
        linger = OVER_LIMIT_LINGER_S if refusal.reason is Reason.TOO_MANY_CONNECTIONS else LINGER_S
        await answer_and_close(stream, answer, linger_s=linger)

    def _audit_refusal(
        self,
        reason: Reason,
        message: str,
        n: int,
        *,
        method: str = "",
        target: Target | None = None,
    ) -> None:
        detail: dict[str, Any] = {
            "reason": reason.value,
            "status": reason.status,
            "message": clip(message, 300),
            "count": n,
        }
        if method:
            detail["method"] = clip(method, 16)
        if target is not None:
            detail.update(host=target.host, port=target.port)
        records.audit(
            self.lane.db,
            f"plugin:{self.key}",
            "egress.refused",
            plugin=self.key,
            risk_score=reason.risk,
            detail=detail,
        )
        records.count_egress_refusals(self.lane.db, self.key, n)

    def _audit_request(
        self,
        method: str,
        target: Target,
        address: str,
        outcome: Outcome,
        started: float,
        *,
        granted: bool = False,
    ) -> None:
        detail: dict[str, Any] = {
            "kind": "connect" if method == "CONNECT" else "forward",
            "method": clip(method, 16),
            "host": target.host,
            "port": target.port,
            "address": address,
            "status": outcome.status,
            "bytes_sent": outcome.sent,
            "bytes_received": outcome.received,
            "bytes": outcome.sent + outcome.received,
            "duration_ms": round((trio.current_time() - started) * 1000, 1),
        }
        if outcome.error:
            detail["error"] = outcome.error
        records.audit(
            self.lane.db,
            f"plugin:{self.key}",
            "egress.request",
            plugin=self.key,
            risk_score=GRANTED_RISK if granted else ALLOWED_RISK,
            detail=detail,
        )


def reaches_own_host(stream: trio.SocketStream) -> bool:
    """Whether a connected socket leads back to this host: a loopback peer, or one whose
    address is the socket's own (the kernel routes a host's own address over loopback)."""
    local, peer = stream.socket.getsockname()[0], stream.socket.getpeername()[0]
    peer_ip, local_ip = ip(peer), ip(local)
    if peer_ip is None:
        return False
    if classify(peer_ip) is AddressClass.LOOPBACK:
        return True
    return local_ip is not None and plain(local_ip) == plain(peer_ip)


def _host_header(target: Target) -> str:
    host = f"[{target.host}]" if ":" in target.host else target.host
    return host if target.port == 80 else f"{host}:{target.port}"


def _summary(reason: Reason) -> str:
    return f"further {reason.value.replace('_', ' ')} refusals in the last minute"


__all__ = [
    "EgressLane",
    "PluginProxy",
    "egress_detail",
    "egress_environment",
    "listen_unix",
    "resolve",
    "unix_address",
]
