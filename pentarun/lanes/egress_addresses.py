"""Destinations of the egress lane: what kind of address an IP is, and request targets. Pure.

    classify(address) -> AddressClass        PUBLIC, or why it is not (loopback, private, ...)
    parse_authority("host:port") -> Target   a CONNECT target (or a grant's host:port)
    parse_proxy_url("http://h/p") -> (Target, "/p")   an absolute-form request target

Classification: cloud metadata addresses first (METADATA, whatever range they sit in), then
the special-purpose ranges of `SPECIAL` (IANA's IPv4 and IPv6 special registries, the ones that
matter for a forward proxy); an IPv6 address outside 2000::/3 is reserved; the rest is public.
IPv4-mapped (::ffff:a.b.c.d) and NAT64 (64:ff9b::/96) addresses are judged by the IPv4 address
they carry, so no IPv6 spelling reaches a private IPv4 address unnoticed. 6to4 and Teredo are
reserved.

Targets: hostnames are lowercase ASCII labels without a trailing dot; numeric spellings that
only the C resolver reads as addresses (`127.1`, `0x7f000001`, `2130706433`) are refused, so a
name is never an address in disguise. IPv6 literals are written in brackets; an unbracketed one
followed by a port (Python 3.11's http.client sends `CONNECT ::1:443`) is read as address:port.
"""

from __future__ import annotations

import enum
import ipaddress
import re
import socket
from dataclasses import dataclass

from .calls import clip

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

MAX_HOST = 253

LABEL = re.compile(r"^(?!-)[a-z0-9_-]{1,63}(?<!-)\Z")
PORT = re.compile(r"^[0-9]{1,5}\Z")


class AddressClass(enum.Enum):
    PUBLIC = "public"
    LOOPBACK = "loopback"
    PRIVATE = "private"
    LINK_LOCAL = "link_local"
    MULTICAST = "multicast"
    UNSPECIFIED = "unspecified"
    RESERVED = "reserved"
    METADATA = "metadata"


# Cloud instance metadata, credential and host services, refused whatever their range.
METADATA: frozenset[IPAddress] = frozenset(
    ipaddress.ip_address(a)
    for a in (
        "169.254.169.254",  # AWS, GCP, Azure, OpenStack, DigitalOcean, Oracle, Hetzner IMDS
        "169.254.169.253",  # AWS VPC DNS resolver
        "169.254.169.123",  # AWS time sync
        "169.254.170.2",  # AWS ECS task metadata and credentials
        "169.254.170.23",  # AWS EKS pod identity agent
        "169.254.0.23",  # Tencent Cloud metadata
        "100.100.100.200",  # Alibaba Cloud metadata
        "192.0.0.192",  # Oracle Cloud metadata (legacy)
        "168.63.129.16",  # Azure WireServer and host DNS (in a public range)
        "fd00:ec2::254",  # AWS IMDS over IPv6
        "fd00:ec2::253",  # AWS VPC DNS over IPv6
        "fd00:ec2::123",  # AWS time sync over IPv6
        "fd00:ec2::23",  # AWS EKS pod identity over IPv6
    )
)

SPECIAL: tuple[tuple[IPNetwork, AddressClass], ...] = tuple(
    (ipaddress.ip_network(net), cls)
    for net, cls in (
        ("0.0.0.0/8", AddressClass.UNSPECIFIED),  # "this network": 0.0.0.0 reaches the host
        ("10.0.0.0/8", AddressClass.PRIVATE),
        ("100.64.0.0/10", AddressClass.PRIVATE),  # carrier-grade NAT (shared address space)
        ("127.0.0.0/8", AddressClass.LOOPBACK),
        ("169.254.0.0/16", AddressClass.LINK_LOCAL),
        ("172.16.0.0/12", AddressClass.PRIVATE),
        ("192.0.0.0/24", AddressClass.RESERVED),  # IETF protocol assignments
        ("192.0.2.0/24", AddressClass.RESERVED),  # documentation
        ("192.88.99.0/24", AddressClass.RESERVED),  # 6to4 relay anycast
        ("192.168.0.0/16", AddressClass.PRIVATE),
        ("198.18.0.0/15", AddressClass.RESERVED),  # benchmarking
        ("198.51.100.0/24", AddressClass.RESERVED),  # documentation
        ("203.0.113.0/24", AddressClass.RESERVED),  # documentation
        ("224.0.0.0/4", AddressClass.MULTICAST),
        ("240.0.0.0/4", AddressClass.RESERVED),  # and the broadcast address
        ("::/128", AddressClass.UNSPECIFIED),
        ("::1/128", AddressClass.LOOPBACK),
        ("64:ff9b:1::/48", AddressClass.PRIVATE),  # local-use NAT64
        ("100::/64", AddressClass.RESERVED),  # discard-only
        ("2001::/23", AddressClass.RESERVED),  # IETF assignments (Teredo, ORCHID, ...)
        ("2001:db8::/32", AddressClass.RESERVED),  # documentation
        ("2002::/16", AddressClass.RESERVED),  # 6to4 (deprecated)
        ("3fff::/20", AddressClass.RESERVED),  # documentation
        ("5f00::/16", AddressClass.RESERVED),  # SRv6 SIDs
        ("fc00::/7", AddressClass.PRIVATE),  # unique local
        ("fe80::/10", AddressClass.LINK_LOCAL),
        ("fec0::/10", AddressClass.PRIVATE),  # site-local (deprecated)
        ("ff00::/8", AddressClass.MULTICAST),
    )
)
_NAT64 = ipaddress.IPv6Network("64:ff9b::/96")
GLOBAL_UNICAST = ipaddress.IPv6Network("2000::/3")


def plain(address: IPAddress) -> IPAddress:
    """`address` without an IPv6 scope id, and an IPv4-mapped IPv6 address as IPv4."""
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped is not None:
            return address.ipv4_mapped
        if address.scope_id:
            return ipaddress.IPv6Address(address.packed)
    return address


def classify(address: IPAddress) -> AddressClass:
    """What kind of destination `address` is (module docstring)."""
    address = plain(address)
    if address in METADATA:
        return AddressClass.METADATA
    if isinstance(address, ipaddress.IPv6Address) and address in _NAT64:
        return classify(ipaddress.IPv4Address(address.packed[-4:]))
    for network, cls in SPECIAL:
        if address.version == network.version and address in network:
            return cls
    if isinstance(address, ipaddress.IPv6Address) and address not in GLOBAL_UNICAST:
        return AddressClass.RESERVED
    return AddressClass.PUBLIC


# --- targets ---------------------------------------------------------------------------------


class TargetError(ValueError):
    """A request target the proxy cannot use (the message says why)."""


@dataclass(frozen=True)
class Target:
    """Where a request goes: a lowercase name (no trailing dot) or an IP literal, and a port."""

    host: str
    port: int
    literal: IPAddress | None = None

    def __str__(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}"


def _port(text: str) -> int:
    if not PORT.fullmatch(text) or not 1 <= int(text) <= 65535:
        raise TargetError(f"port {clip(text)!r} is not a number from 1 to 65535")
    return int(text)


def ip(text: str) -> IPAddress | None:
    """`text` as an IP address, or None."""
    try:
        return ipaddress.ip_address(text)
    except ValueError:
        return None


def hostname(text: str) -> str:
    """`text` as a lowercase DNS name without its trailing dot, or TargetError. Numeric forms
    that only the C resolver reads as addresses (`127.1`, `0x7f000001`) are refused."""
    if not text.isascii():
        raise TargetError(f"host {clip(text)!r} is not ASCII (use its IDNA form)")
    name = text.lower().removesuffix(".")
    labels = name.split(".")
    if not name or len(name) > MAX_HOST or not all(LABEL.fullmatch(label) for label in labels):
        raise TargetError(f"host {clip(text)!r} is not a valid hostname")
    if labels[-1].isdigit() or _inet_aton_accepts(name):
        raise TargetError(f"host {clip(text)!r} is a number, not a name: write the IP address")
    return name


def _inet_aton_accepts(name: str) -> bool:
    try:
        socket.inet_aton(name)
    except OSError:
        return False
    return True


def host_target(host: str, port: int) -> Target:
    """A Target from a host (a name, an IP, or a bracketed IPv6 literal) and a port."""
    bracketed = host.startswith("[") and host.endswith("]")
    literal = ip(host[1:-1] if bracketed else host)
    if literal is not None:
        if bracketed and literal.version == 4:
            raise TargetError(f"host {clip(host)!r}: brackets hold IPv6 addresses only")
        if literal.version == 6 and literal.ipv4_mapped:
            literal = literal.ipv4_mapped
        return Target(str(literal), port, literal)
    if bracketed:
        raise TargetError(f"host {clip(host)!r} is not an IPv6 address")
    return Target(hostname(host), port)


def parse_authority(text: str, default_port: int | None = None) -> Target:
    """`host:port` (a CONNECT target); without a port, `default_port` (None: required).
    An unbracketed IPv6 literal with a port (`::1:443`, as Python 3.11's http.client sends
    it) is read as address and port."""
    if not text or len(text) > MAX_HOST + 10:
        raise TargetError("an empty or over-long host")
    if text.startswith("["):
        host, sep, rest = text.partition("]")
        host += "]"
        if rest and not rest.startswith(":"):
            raise TargetError(f"{clip(text)!r} is not host:port")
        port_text = rest[1:] if rest else None
    elif text.count(":") > 1:  # an unbracketed IPv6 literal: the last field is the port
        host, _, port_text_ = text.rpartition(":")
        if ip(host) is None:
            raise TargetError(f"{clip(text)!r}: write an IPv6 address in brackets, [addr]:port")
        port_text = port_text_
    else:
        host, sep, port_text_ = text.partition(":")
        port_text = port_text_ if sep else None
    if port_text is None:
        if default_port is None:
            raise TargetError(f"{clip(text)!r} has no port (write host:port)")
        return host_target(host, default_port)
    return host_target(host, _port(port_text))


def parse_proxy_url(url: str) -> tuple[Target, str]:
    """An absolute-form request target (`http://host[:port]/path?query`): where it goes and
    the origin-form target to send there."""
    if not url.isascii():
        raise TargetError("the request target is not ASCII")
    scheme, sep, rest = url.partition("://")
    if not sep or "/" in scheme:
        raise TargetError(f"{clip(url)!r} is not an absolute http:// URL (not a proxy request?)")
    if scheme.lower() == "https":
        raise TargetError("https:// goes through CONNECT, not as a forwarded request")
    if scheme.lower() != "http":
        raise TargetError(f"scheme {clip(scheme)!r} is not proxied: only http:// and CONNECT")
    end = min((i for i in (rest.find(c) for c in "/?#") if i >= 0), default=len(rest))
    authority, path = rest[:end], rest[end:].partition("#")[0]
    if "@" in authority:
        raise TargetError("credentials in the URL are not forwarded")
    if path.startswith("?") or not path:
        path = "/" + path
    return parse_authority(authority, default_port=80), path
