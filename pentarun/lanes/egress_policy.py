"""The egress lane's decisions: may this plugin reach this host and port, and at which address.

Pure: no I/O, no clock (time is an argument). The proxy server (`lanes/egress.py`) asks in two
steps, so that a name no rule allows is never even looked up (a DNS query is itself a way to
leak data):

    admit(scopes, allowed_domains, grants, target)   -> Admitted | Refusal   (before resolving)
    choose(admitted, grants, addresses)              -> Allowed | Refusal    (after resolving)
    decide(...)                                      both at once

Rules:
- The plugin needs scope `proxy:egress` (SCOPE_MISSING otherwise).
- A name is admitted when it equals a manifest `allowed_domains` entry (exact match: an entry
  does NOT allow its subdomains; an entry written `*.example.com` would allow every strict
  subdomain, but the manifest validator accepts plain hostnames only today), on port 80 or
  443 (DEFAULT_PORTS); or when an operator granted that `name:port`.
- An IP literal is admitted only when a grant covers it: `ip:port` for that port, or a CIDR.
- After resolution (in the core), an address is used only if it is public, or a grant covers
  it (`ip:port` or CIDR). Loopback, private (RFC 1918, CGNAT, ULA), link-local, multicast,
  unspecified, reserved (documentation, benchmarking, 240/4, non-global IPv6) and cloud
  metadata addresses are refused otherwise (`egress_addresses.classify`): a public domain
  that resolves to one (DNS rebinding) is refused. The proxy dials the address chosen here,
  never the name again, so the answer checked is the answer used.
- A name granted `name:port` may resolve to private addresses (the operator named it: a LAN
  camera), but never to a metadata address: those need a grant naming the address (`ip:port`
  or a CIDR), so a name whose DNS changes later cannot lead to the metadata service.
- An allowed domain on a port other than 80/443 reaches only addresses a grant covers.
- The server's own host (any of its addresses, loopback included: the admin API, the
  listeners, whatever else listens there) is reached only at an address and port an operator
  named exactly (`ip:port`, or `name:port` for a name): a CIDR of the LAN or an allowed domain
  that happens to lead back to the host does not open it. Whether an address is the host's
  own is known only once connected (the proxy compares the two ends), so `Allowed.named`
  carries the addresses that may be (`own_host_refusal`).
- A connection lives only while what allowed it still does: the proxy asks `still_allowed`
  again every few seconds, so a revoked grant ends open tunnels too.

Invariant (tested with hypothesis): an Allowed answer never holds an address that is not
public unless a grant covers it (or, for a granted name, it is not a metadata address).

Operator grants (`PUT /api/plugins/{key}/egress`) are parsed here (`parse_grants`): `host:port`
(a hostname, an IPv4 address or a bracketed IPv6 address, port 1-65535) or a CIDR (a bare IP is
a one-address CIDR); a CIDR broader than /8 (IPv4) or /16 (IPv6) is refused, so no single grant
opens everything. `grant_risk` scores a grant for the audit log and the security rating.
"""

from __future__ import annotations

import enum
import ipaddress
import math
from collections.abc import Collection, Iterable, Sequence
from dataclasses import dataclass, field

from ..errors import BadRequest
from .calls import clip
from .egress_addresses import (
    GLOBAL_UNICAST,
    METADATA,
    SPECIAL,
    AddressClass,
    IPAddress,
    IPNetwork,
    Target,
    TargetError,
    classify,
    ip,
    parse_authority,
    plain,
)

SCOPE = "proxy:egress"
DEFAULT_PORTS = frozenset({80, 443})
MAX_GRANTS = 256  # entries an operator may grant one plugin
MAX_GRANT_TEXT = 300  # characters of one entry
MAX_ADDRESSES = 16  # resolved addresses considered per request
MIN_PREFIX = {4: 8, 6: 16}  # the broadest CIDR a grant may name


# --- grants ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class HostGrant:
    """`host:port`: that name (whatever it resolves to but metadata) or that address."""

    host: str
    port: int
    address: IPAddress | None = None

    def __str__(self) -> str:
        return str(Target(self.host, self.port, self.address))


@dataclass(frozen=True)
class NetworkGrant:
    """A CIDR: every address in it, on every port."""

    network: IPNetwork

    def __str__(self) -> str:
        return str(self.network)


Grant = HostGrant | NetworkGrant


def parse_grant(text: str) -> Grant:
    """One operator grant, or TargetError saying what is wrong with it."""
    text = text.strip()
    if not text or len(text) > MAX_GRANT_TEXT:
        raise TargetError("an empty or over-long entry")
    if "/" in text or ip(text) is not None:
        try:
            network = ipaddress.ip_network(text)
        except ValueError as exc:
            raise TargetError(f"not a CIDR: {exc}") from None
        if "%" in text:
            raise TargetError("a CIDR cannot carry a scope id")
        if network.prefixlen < MIN_PREFIX[network.version]:
            raise TargetError(
                f"CIDR {network} is too broad: at most /{MIN_PREFIX[network.version]} "
                f"for IPv{network.version}"
            )
        return NetworkGrant(network)
    target = parse_authority(text)
    if target.literal is not None and "%" in target.host:
        raise TargetError("an address with a scope id cannot be granted")
    return HostGrant(target.host, target.port, target.literal)


def parse_grants(entries: Sequence[str]) -> tuple[Grant, ...]:
    """Every entry parsed, duplicates dropped (first kept), or BadRequest naming the first bad
    entry (its index, its text, the reason)."""
    if len(entries) > MAX_GRANTS:
        raise BadRequest(f"at most {MAX_GRANTS} hosts may be granted", {"limit": MAX_GRANTS})
    grants: dict[str, Grant] = {}
    for i, entry in enumerate(entries):
        try:
            grant = parse_grant(entry)
        except TargetError as exc:
            raise BadRequest(
                f"hosts[{i}] {clip(entry)!r}: {exc} (write host:port, [ipv6]:port or a CIDR)",
                {"index": i, "entry": clip(entry, 200), "reason": str(exc)},
            ) from None
        grants.setdefault(str(grant), grant)
    return tuple(grants.values())


def load_grants(entries: Iterable[str]) -> tuple[Grant, ...]:
    """Stored grants (checked when they were stored); an entry that no longer parses is
    skipped, never widened."""
    grants: list[Grant] = []
    for entry in entries:
        try:
            grants.append(parse_grant(entry))
        except TargetError:
            continue
    return tuple(grants)


def covers_address(grants: Iterable[Grant], address: IPAddress, port: int) -> bool:
    """Whether a grant names this address: an `ip:port` on this port, or a CIDR holding it."""
    address = plain(address)
    for grant in grants:
        if isinstance(grant, NetworkGrant):
            if grant.network.version == address.version and address in grant.network:
                return True
        elif grant.address is not None and grant.port == port and plain(grant.address) == address:
            return True
    return False


_SPECIAL_RISK = {
    AddressClass.METADATA: 90,
    AddressClass.LOOPBACK: 80,
    AddressClass.UNSPECIFIED: 80,
    AddressClass.LINK_LOCAL: 60,
    AddressClass.PRIVATE: 40,
    AddressClass.RESERVED: 40,
    AddressClass.MULTICAST: 40,
    AddressClass.PUBLIC: 20,
}
NAME_GRANT_RISK = 30  # a granted name may resolve to any address but a metadata one


def grant_risk(grant: Grant) -> int:
    """How much a grant opens (1..100): the riskiest kind of address it covers."""
    if isinstance(grant, HostGrant):
        return NAME_GRANT_RISK if grant.address is None else _SPECIAL_RISK[classify(grant.address)]
    risks = [_SPECIAL_RISK[AddressClass.PUBLIC]]
    net = grant.network
    risks += [_SPECIAL_RISK[AddressClass.METADATA] for a in METADATA if a in net]
    risks += [
        _SPECIAL_RISK[cls]
        for special, cls in SPECIAL
        if special.version == net.version and special.overlaps(net)
    ]
    if net.version == 6 and not net.subnet_of(GLOBAL_UNICAST):
        risks.append(_SPECIAL_RISK[AddressClass.RESERVED])
    return max(risks)


# --- decisions -------------------------------------------------------------------------------


class Reason(enum.Enum):
    """Why a request was refused; each has an HTTP status and a risk score."""

    SCOPE_MISSING = "scope_missing"
    BAD_TARGET = "bad_target"  # a malformed request or target
    HOST_NOT_ALLOWED = "host_not_allowed"
    PORT_NOT_ALLOWED = "port_not_allowed"
    ADDRESS_LOOPBACK = "address_loopback"
    ADDRESS_PRIVATE = "address_private"
    ADDRESS_LINK_LOCAL = "address_link_local"
    ADDRESS_MULTICAST = "address_multicast"
    ADDRESS_UNSPECIFIED = "address_unspecified"
    ADDRESS_RESERVED = "address_reserved"
    ADDRESS_METADATA = "address_metadata"
    ADDRESS_SERVER = "address_server"  # the server's own host, not named exactly
    GRANT_REVOKED = "grant_revoked"  # an open connection whose grant was taken back
    NO_ADDRESS = "no_address"  # the name resolved to nothing usable
    REQUEST_TOO_LARGE = "request_too_large"
    RATE_LIMITED = "rate_limited"
    TOO_MANY_CONNECTIONS = "too_many_connections"

    @property
    def status(self) -> int:
        return _STATUS.get(self, 403)

    @property
    def risk(self) -> int:
        return _RISK[self]


_STATUS = {
    Reason.BAD_TARGET: 400,
    Reason.NO_ADDRESS: 502,
    Reason.REQUEST_TOO_LARGE: 413,
    Reason.RATE_LIMITED: 429,
    Reason.TOO_MANY_CONNECTIONS: 429,
}
_RISK = {
    Reason.SCOPE_MISSING: 60,
    Reason.BAD_TARGET: 10,
    Reason.HOST_NOT_ALLOWED: 30,
    Reason.PORT_NOT_ALLOWED: 30,
    Reason.ADDRESS_LOOPBACK: 80,
    Reason.ADDRESS_PRIVATE: 60,
    Reason.ADDRESS_LINK_LOCAL: 70,
    Reason.ADDRESS_MULTICAST: 50,
    Reason.ADDRESS_UNSPECIFIED: 80,
    Reason.ADDRESS_RESERVED: 40,
    Reason.ADDRESS_METADATA: 90,
    Reason.ADDRESS_SERVER: 90,
    Reason.GRANT_REVOKED: 30,
    Reason.NO_ADDRESS: 10,
    Reason.REQUEST_TOO_LARGE: 10,
    Reason.RATE_LIMITED: 20,
    Reason.TOO_MANY_CONNECTIONS: 20,
}
_ADDRESS_REASON = {
    AddressClass.LOOPBACK: Reason.ADDRESS_LOOPBACK,
    AddressClass.PRIVATE: Reason.ADDRESS_PRIVATE,
    AddressClass.LINK_LOCAL: Reason.ADDRESS_LINK_LOCAL,
    AddressClass.MULTICAST: Reason.ADDRESS_MULTICAST,
    AddressClass.UNSPECIFIED: Reason.ADDRESS_UNSPECIFIED,
    AddressClass.RESERVED: Reason.ADDRESS_RESERVED,
    AddressClass.METADATA: Reason.ADDRESS_METADATA,
}


@dataclass(frozen=True)
class Refusal:
    reason: Reason
    message: str


class Via(enum.Enum):
    """What admitted a target."""

    DOMAIN = "allowed_domain"
    NAME_GRANT = "name_grant"
    ADDRESS_GRANT = "address_grant"


@dataclass(frozen=True)
class Admitted:
    target: Target
    via: Via
    # an allowed domain on a port other than 80/443: only granted addresses will do
    needs_address_grant: bool = False


@dataclass(frozen=True)
class Allowed:
    """Connect to these addresses, in this order (the first that answers)."""

    target: Target
    via: Via
    addresses: tuple[str, ...]
    granted: bool  # some address is reachable only because a grant covers it
    named: tuple[str, ...] = ()  # addresses an operator named exactly (may be the host's own)


def domain_matches(domain: str, host: str) -> bool:
    """An allowed domain matches its own name only; `*.example.com` matches strict subdomains."""
    domain = domain.lower().removesuffix(".")
    if domain.startswith("*."):
        return host.endswith(domain[1:]) and len(host) > len(domain) - 1
    return host == domain


def admit(
    scopes: Collection[str],
    allowed_domains: Iterable[str],
    grants: Sequence[Grant],
    target: Target,
) -> Admitted | Refusal:
    """May the plugin ask for `target` at all (before anything is resolved)?"""
    if SCOPE not in scopes:
        return Refusal(Reason.SCOPE_MISSING, f"the plugin does not hold scope {SCOPE}")
    if target.literal is not None:
        if covers_address(grants, target.literal, target.port):
            return Admitted(target, Via.ADDRESS_GRANT)
        other_port = any(
            isinstance(g, HostGrant)
            and g.address is not None
            and plain(g.address) == target.literal
            for g in grants
        )
        if other_port:
            return Refusal(Reason.PORT_NOT_ALLOWED, f"{target}: this port is not granted")
        return Refusal(Reason.HOST_NOT_ALLOWED, f"{target}: IP addresses need an operator grant")
    named = [g for g in grants if isinstance(g, HostGrant) and g.address is None]
    if any(g.host == target.host and g.port == target.port for g in named):
        return Admitted(target, Via.NAME_GRANT)
    if any(domain_matches(d, target.host) for d in allowed_domains):
        return Admitted(target, Via.DOMAIN, needs_address_grant=target.port not in DEFAULT_PORTS)
    if any(g.host == target.host for g in named):
        return Refusal(Reason.PORT_NOT_ALLOWED, f"{target}: this port is not granted")
    return Refusal(
        Reason.HOST_NOT_ALLOWED, f"{target.host} is not in the allowed domains or the grants"
    )


def choose(
    admitted: Admitted, grants: Sequence[Grant], addresses: Sequence[str]
) -> Allowed | Refusal:
    """Which of the resolved `addresses` the plugin may reach (module docstring); an IP
    literal target is its own (only) address."""
    target = admitted.target
    if target.literal is not None:
        addresses = [target.host]
    permitted: list[str] = []
    named: list[str] = []
    granted = False
    refused: list[tuple[AddressClass, str]] = []
    for text in list(dict.fromkeys(addresses))[:MAX_ADDRESSES]:
        address = ip(text)
        if address is None:
            continue
        cls = classify(address)
        covered = covers_address(grants, address, target.port)
        if admitted.via is Via.ADDRESS_GRANT or admitted.needs_address_grant:
            ok = covered
        elif admitted.via is Via.NAME_GRANT:
            ok = covered or cls is not AddressClass.METADATA
        else:
            ok = covered or cls is AddressClass.PUBLIC
        if ok:  # a mapped address is dialled as IPv4; an IPv6 scope id is kept
            mapped = isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped
            permitted.append(str(plain(address)) if mapped else text)
            granted = granted or cls is not AddressClass.PUBLIC
            if admitted.via is Via.NAME_GRANT or names_exactly(grants, address, target.port):
                named.append(permitted[-1])
        else:
            refused.append((cls, str(plain(address))))
    if permitted:
        return Allowed(target, admitted.via, tuple(permitted), granted, tuple(named))
    if not refused:
        return Refusal(Reason.NO_ADDRESS, f"{target.host} resolved to no usable address")
    cls, shown = refused[0]
    if cls is AddressClass.PUBLIC:  # an allowed domain on a port other than 80/443
        return Refusal(
            Reason.PORT_NOT_ALLOWED,
            f"{target}: allowed domains are reachable on ports 80 and 443 only; grant this port",
        )
    return Refusal(
        _ADDRESS_REASON[cls],
        f"{target.host} resolves to {shown}, a {cls.value.replace('_', '-')} address, "
        "which needs an operator grant",
    )


def names_exactly(grants: Iterable[Grant], address: IPAddress, port: int) -> bool:
    """Whether an `ip:port` grant names this very address and port (a CIDR does not)."""
    address = plain(address)
    return any(
        isinstance(g, HostGrant)
        and g.address is not None
        and g.port == port
        and plain(g.address) == address
        for g in grants
    )


def own_host_refusal(allowed: Allowed, address: str, own_host: bool) -> Refusal | None:
    """Once connected to `address`: refused when it turned out to be the server's own host
    and no operator named it exactly."""
    if not own_host or address in allowed.named:
        return None
    target = allowed.target
    return Refusal(
        Reason.ADDRESS_SERVER,
        f"{target}: {address} is the server's own host; only an exact grant "
        f"({address}:{target.port}) reaches it",
    )


def still_allowed(
    scopes: Collection[str],
    allowed_domains: Iterable[str],
    grants: Sequence[Grant],
    target: Target,
    address: str,
) -> bool:
    """Whether an open connection to `address` would be allowed again with today's grants."""
    chosen = decide(scopes, allowed_domains, grants, target, [address])
    return isinstance(chosen, Allowed) and address in chosen.addresses


def decide(
    scopes: Collection[str],
    allowed_domains: Iterable[str],
    grants: Sequence[Grant],
    target: Target,
    addresses: Sequence[str],
) -> Allowed | Refusal:
    """`admit` then `choose`: the whole decision for one request."""
    admitted = admit(scopes, allowed_domains, grants, target)
    if isinstance(admitted, Refusal):
        return admitted
    return choose(admitted, grants, addresses)


# --- bounds ----------------------------------------------------------------------------------


@dataclass
class RateBucket:
    """`per_minute` requests a minute, in bursts of at most that many (a token bucket)."""

    per_minute: int
    tokens: float = math.nan
    stamp: float = math.nan

    def take(self, now: float) -> bool:
        if math.isnan(self.tokens):
            self.tokens, self.stamp = float(self.per_minute), now
        elapsed = max(0.0, now - self.stamp)
        self.tokens = min(float(self.per_minute), self.tokens + elapsed * self.per_minute / 60)
        self.stamp = now
        if self.tokens >= 1:
            self.tokens -= 1
            return True
        return False


@dataclass
class RefusalSampler:
    """Refusals a plugin can repeat as fast as it likes (rate limit, connection limit) are
    written as at most one audit row per reason per `window_s`: the first at once, the rest
    counted, and handed back by `due` once the window is over (or with the next row)."""

    window_s: float
    opened: dict[Reason, float] = field(default_factory=dict)
    pending: dict[Reason, int] = field(default_factory=dict)

    def note(self, reason: Reason, now: float) -> int:
        """How many refusals of this reason to write in one row now (0: counted for later)."""
        start = self.opened.get(reason)
        if start is None or now - start >= self.window_s:
            self.opened[reason] = now
            return 1 + self.pending.pop(reason, 0)
        self.pending[reason] = self.pending.get(reason, 0) + 1
        return 0

    def due(self, now: float, *, everything: bool = False) -> dict[Reason, int]:
        """The counted refusals whose window is over (all of them with `everything`)."""
        out = {
            r: n
            for r, n in self.pending.items()
            if everything or now - self.opened.get(r, now) >= self.window_s
        }
        for reason in out:
            del self.pending[reason]
            self.opened.pop(reason, None)
        return out
