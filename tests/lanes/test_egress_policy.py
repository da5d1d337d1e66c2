"""The egress lane's pure decisions: address classes, targets, grants, allow/refuse, bounds."""

import ipaddress

import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

from pentarun.errors import BadRequest
from pentarun.lanes.egress_addresses import (
    METADATA,
    SPECIAL,
    AddressClass,
    Target,
    TargetError,
    classify,
    parse_authority,
    parse_proxy_url,
)
from pentarun.lanes.egress_policy import (
    SCOPE,
    Admitted,
    Allowed,
    HostGrant,
    NetworkGrant,
    RateBucket,
    Reason,
    Refusal,
    RefusalSampler,
    Via,
    admit,
    covers_address,
    decide,
    domain_matches,
    grant_risk,
    load_grants,
    own_host_refusal,
    parse_grant,
    parse_grants,
    still_allowed,
)

SCOPES = (SCOPE,)
DOMAINS = ("api.example.com", "cdn.example.org")
ADDRESS_REASONS = {r for r in Reason if r.value.startswith("address_")}


def name(host, port=443):
    return parse_authority(f"{host}:{port}")


@pytest.mark.parametrize(
    ("address", "cls"),
    [
        ("93.184.216.34", AddressClass.PUBLIC),
        ("2606:2800:220:1::1", AddressClass.PUBLIC),
        ("127.0.0.1", AddressClass.LOOPBACK),
        ("127.255.0.9", AddressClass.LOOPBACK),
        ("::1", AddressClass.LOOPBACK),
        ("::ffff:127.0.0.1", AddressClass.LOOPBACK),
        ("64:ff9b::10.0.0.1", AddressClass.PRIVATE),  # NAT64 of a private address
        ("64:ff9b::8.8.8.8", AddressClass.PUBLIC),
        ("10.1.2.3", AddressClass.PRIVATE),
        ("172.31.255.255", AddressClass.PRIVATE),
        ("192.168.1.10", AddressClass.PRIVATE),
        ("100.64.0.1", AddressClass.PRIVATE),
        ("fd12:3456::1", AddressClass.PRIVATE),
        ("169.254.1.1", AddressClass.LINK_LOCAL),
        ("fe80::1", AddressClass.LINK_LOCAL),
        ("fe80::1%eth0", AddressClass.LINK_LOCAL),
        ("224.0.0.251", AddressClass.MULTICAST),
        ("ff02::1", AddressClass.MULTICAST),
        ("0.0.0.0", AddressClass.UNSPECIFIED),
        ("::", AddressClass.UNSPECIFIED),
        ("255.255.255.255", AddressClass.RESERVED),
        ("192.0.2.7", AddressClass.RESERVED),
        ("198.18.0.1", AddressClass.RESERVED),
        ("2001:db8::1", AddressClass.RESERVED),
        ("2002:7f00:1::1", AddressClass.RESERVED),  # 6to4 of 127.0.0.1
        ("2001:0:4136:e378:8000:63bf:3fff:fdd2", AddressClass.RESERVED),  # Teredo
        ("::127.0.0.1", AddressClass.RESERVED),  # IPv4-compatible (deprecated)
        ("169.254.169.254", AddressClass.METADATA),
        ("::ffff:169.254.169.254", AddressClass.METADATA),
        ("fd00:ec2::254", AddressClass.METADATA),
        ("100.100.100.200", AddressClass.METADATA),
        ("168.63.129.16", AddressClass.METADATA),
    ],
)
def test_addresses_are_classified(address, cls):
    assert classify(ipaddress.ip_address(address)) is cls


@given(st.ip_addresses(v=4))
def test_an_ipv4_mapped_address_is_judged_as_its_ipv4(address):
    mapped = ipaddress.IPv6Address(f"::ffff:{address}")
    assert classify(mapped) is classify(address)


@pytest.mark.parametrize(
    ("text", "host", "port"),
    [
        ("Example.COM.:443", "example.com", 443),
        ("10.0.0.5:554", "10.0.0.5", 554),
        ("[::1]:8080", "::1", 8080),
        ("::1:8080", "::1", 8080),  # Python 3.11's http.client sends CONNECT without brackets
        ("[::ffff:127.0.0.1]:80", "127.0.0.1", 80),
        ("under_score.lan:80", "under_score.lan", 80),
    ],
)
def test_authorities(text, host, port):
    target = parse_authority(text)
    assert (target.host, target.port) == (host, port)


@pytest.mark.parametrize(
    "text",
    [
        "example.com",  # no port
        "example.com:0",
        "example.com:65536",
        "example.com:+80",
        "exa mple.com:80",
        "-bad.com:80",
        "127.1:80",  # the C resolver reads it as 127.0.0.1
        "0x7f000001:80",
        "2130706433:80",
        "foo.123:80",
        "bücher.de:80",
        "[10.0.0.1]:80",
        "[nothost]:80",
        ":80",
        "a" * 300 + ".com:80",
    ],
)
def test_bad_authorities(text):
    with pytest.raises(TargetError):
        parse_authority(text)


def test_proxy_urls():
    assert parse_proxy_url("http://Example.com/a/b?c=1#frag") == (
        Target("example.com", 80),
        "/a/b?c=1",
    )
    target, path = parse_proxy_url("HTTP://[::1]:8080?x")
    assert (target.host, target.port, path) == ("::1", 8080, "/?x")
    for bad in ("/relative", "https://example.com/", "ftp://example.com/", "http://u:p@h.com/"):
        with pytest.raises(TargetError):
            parse_proxy_url(bad)


def test_grants_parse_to_a_canonical_text():
    grants = parse_grants(
        [
            "Camera.LAN:554",
            "192.168.1.10:80",
            "[FE80::1]:8080",
            "10.0.0.0/24",
            "fd00:1::/64",
            "192.168.1.20",
            "camera.lan:554",  # duplicate of the first
        ]
    )
    assert [str(g) for g in grants] == [
        "camera.lan:554",
        "192.168.1.10:80",
        "[fe80::1]:8080",
        "10.0.0.0/24",
        "fd00:1::/64",
        "192.168.1.20/32",
    ]
    assert load_grants([*map(str, grants), "garbage here"]) == grants


@pytest.mark.parametrize(
    ("entry", "why"),
    [
        ("camera.lan", "no port"),
        ("camera.lan:99999", "65535"),
        ("10.0.0.1/24", "host bits"),
        ("0.0.0.0/0", "too broad"),
        ("::/0", "too broad"),
        ("10.0.0.0/7", "too broad"),
        ("[fe80::1%eth0]:80", "scope id"),
        ("", "empty"),
        ("x" * 400, "over-long"),
    ],
)
def test_a_bad_grant_is_named_by_its_index(entry, why):
    with pytest.raises(BadRequest) as caught:
        parse_grants(["ok.lan:80", entry])
    assert caught.value.details["index"] == 1
    assert why in caught.value.message


def test_the_grant_list_is_bounded():
    with pytest.raises(BadRequest):
        parse_grants([f"h{i}.lan:80" for i in range(257)])


def test_grant_risk_follows_what_a_grant_opens():
    assert grant_risk(parse_grant("8.8.8.0/24")) == 20
    assert grant_risk(parse_grant("nvr.lan:80")) == 30
    assert grant_risk(parse_grant("192.168.1.0/24")) == 40
    assert grant_risk(parse_grant("169.254.0.0/16")) == 90  # holds the metadata address
    assert grant_risk(parse_grant("127.0.0.1:8128")) == 80
    assert grant_risk(parse_grant("fd12::/16")) == 40
    assert grant_risk(parse_grant("fd00::/16")) == 90  # holds AWS IMDS over IPv6


def test_domains_match_exactly_and_wildcards_only_strict_subdomains():
    assert domain_matches("api.example.com", "api.example.com")
    assert domain_matches("API.example.com.", "api.example.com")
    assert not domain_matches("example.com", "api.example.com")
    assert not domain_matches("example.com", "evilexample.com")
    assert domain_matches("*.example.com", "a.b.example.com")
    assert not domain_matches("*.example.com", "example.com")
    assert not domain_matches("*.example.com", "badexample.com")


def test_the_scope_is_needed_first():
    refused = decide((), DOMAINS, (), name("api.example.com"), ["93.184.216.34"])
    assert isinstance(refused, Refusal) and refused.reason is Reason.SCOPE_MISSING


def test_an_allowed_domain_on_its_default_ports():
    allowed = decide(SCOPES, DOMAINS, (), name("api.example.com"), ["93.184.216.34"])
    assert isinstance(allowed, Allowed) and allowed.addresses == ("93.184.216.34",)
    assert allowed.via is Via.DOMAIN and not allowed.granted
    other = decide(SCOPES, DOMAINS, (), name("api.example.com", 8443), ["93.184.216.34"])
    assert isinstance(other, Refusal) and other.reason is Reason.PORT_NOT_ALLOWED
    granted = parse_grants(["api.example.com:8443"])
    assert isinstance(
        decide(SCOPES, DOMAINS, granted, name("api.example.com", 8443), ["93.184.216.34"]),
        Allowed,
    )


def test_unknown_names_are_refused_before_resolution():
    refused = admit(SCOPES, DOMAINS, (), name("exfil.attacker.net"))
    assert isinstance(refused, Refusal) and refused.reason is Reason.HOST_NOT_ALLOWED
    refused = admit(SCOPES, DOMAINS, parse_grants(["nvr.lan:554"]), name("nvr.lan", 80))
    assert isinstance(refused, Refusal) and refused.reason is Reason.PORT_NOT_ALLOWED


def test_dns_rebinding_to_a_private_address_is_refused():
    for address, reason in [
        ("127.0.0.1", Reason.ADDRESS_LOOPBACK),
        ("10.0.0.8", Reason.ADDRESS_PRIVATE),
        ("169.254.169.254", Reason.ADDRESS_METADATA),
        ("::ffff:192.168.0.1", Reason.ADDRESS_PRIVATE),
    ]:
        refused = decide(SCOPES, DOMAINS, (), name("api.example.com"), [address])
        assert isinstance(refused, Refusal) and refused.reason is reason, address
        assert "needs an operator grant" in refused.message


def test_only_the_permitted_addresses_of_a_mixed_answer_are_dialled():
    allowed = decide(
        SCOPES, DOMAINS, (), name("api.example.com"), ["10.0.0.1", "93.184.216.34", "::1"]
    )
    assert isinstance(allowed, Allowed) and allowed.addresses == ("93.184.216.34",)


def test_grants_open_private_destinations():
    grants = parse_grants(["192.168.1.0/24", "127.0.0.1:8080", "nvr.lan:554"])
    lan = decide(SCOPES, (), grants, parse_authority("192.168.1.20:554"), [])
    assert isinstance(lan, Allowed) and lan.addresses == ("192.168.1.20",) and lan.granted
    loop = decide(SCOPES, (), grants, parse_authority("127.0.0.1:8080"), [])
    assert isinstance(loop, Allowed)
    wrong_port = decide(SCOPES, (), grants, parse_authority("127.0.0.1:8128"), [])
    assert isinstance(wrong_port, Refusal) and wrong_port.reason is Reason.PORT_NOT_ALLOWED
    ungranted = decide(SCOPES, (), grants, parse_authority("10.0.0.1:80"), [])
    assert isinstance(ungranted, Refusal) and ungranted.reason is Reason.HOST_NOT_ALLOWED
    named = decide(SCOPES, (), grants, name("nvr.lan", 554), ["192.168.7.7"])
    assert isinstance(named, Allowed) and named.via is Via.NAME_GRANT


def test_a_granted_name_never_leads_to_a_metadata_address():
    grants = parse_grants(["nvr.lan:80"])
    refused = decide(SCOPES, (), grants, name("nvr.lan", 80), ["169.254.169.254"])
    assert isinstance(refused, Refusal) and refused.reason is Reason.ADDRESS_METADATA
    explicit = parse_grants(["nvr.lan:80", "169.254.169.254:80"])
    assert isinstance(
        decide(SCOPES, (), explicit, name("nvr.lan", 80), ["169.254.169.254"]), Allowed
    )


def test_an_allowed_domain_on_another_port_reaches_granted_addresses_only():
    grants = parse_grants(["192.168.1.0/24"])
    target = name("api.example.com", 8443)
    admitted = admit(SCOPES, DOMAINS, grants, target)
    assert isinstance(admitted, Admitted) and admitted.needs_address_grant
    assert isinstance(decide(SCOPES, DOMAINS, grants, target, ["192.168.1.5"]), Allowed)
    public = decide(SCOPES, DOMAINS, grants, target, ["93.184.216.34"])
    assert isinstance(public, Refusal) and public.reason is Reason.PORT_NOT_ALLOWED


def test_no_usable_address():
    refused = decide(SCOPES, DOMAINS, (), name("api.example.com"), ["not-an-address"])
    assert isinstance(refused, Refusal) and refused.reason is Reason.NO_ADDRESS


# --- properties -------------------------------------------------------------------------------

special_networks = st.sampled_from([net for net, _ in SPECIAL])
special_addresses = special_networks.flatmap(
    lambda net: st.ip_addresses(network=net)  # type: ignore[arg-type]
)
addresses = st.one_of(
    st.ip_addresses(),
    special_addresses,
    st.sampled_from(sorted(METADATA, key=str)),
    st.ip_addresses(v=4).map(lambda a: ipaddress.IPv6Address(f"::ffff:{a}")),
)
ports = st.one_of(st.sampled_from([80, 443, 554, 8080]), st.integers(1, 65535))
labels = st.from_regex(r"\A[a-z][a-z0-9]{0,9}\Z")
names = st.builds(lambda a, b: f"{a}.{b}", labels, st.sampled_from(["lan", "com", "example.com"]))


@st.composite
def grants(draw):
    out = []
    for _ in range(draw(st.integers(0, 4))):
        kind = draw(st.sampled_from(["net", "ip", "name"]))
        if kind == "net":
            address = draw(addresses)
            low = 8 if address.version == 4 else 16
            prefix = draw(st.integers(low, address.max_prefixlen))
            out.append(NetworkGrant(ipaddress.ip_network(f"{address}/{prefix}", strict=False)))
        elif kind == "ip":
            out.append(parse_grant(str(Target(str(draw(addresses)), draw(ports)))))
        else:
            out.append(HostGrant(draw(names), draw(ports)))
    return tuple(out)


@st.composite
def targets(draw, domains):
    kind = draw(st.sampled_from(["domain", "name", "literal"]))
    port = draw(ports)
    if kind == "domain" and domains:
        return Target(draw(st.sampled_from(domains)), port)
    if kind == "literal":
        return parse_authority(str(Target(str(draw(addresses)), port)))
    return Target(draw(names), port)


domain_lists = st.lists(names, max_size=3, unique=True)


@given(domain_lists.flatmap(lambda d: st.tuples(st.just(d), targets(d))), st.lists(addresses))
def test_without_grants_only_public_addresses_are_ever_allowed(domains_target, resolved):
    domains, target = domains_target
    decision = decide(SCOPES, domains, (), target, [str(a) for a in resolved])
    if isinstance(decision, Allowed):
        for text in decision.addresses:
            assert classify(ipaddress.ip_address(text)) is AddressClass.PUBLIC
        assert decision.target.port in (80, 443) and decision.via is Via.DOMAIN


@given(
    domain_lists.flatmap(lambda d: st.tuples(st.just(d), targets(d))),
    grants(),
    st.lists(addresses),
)
def test_a_non_public_address_is_allowed_only_when_a_grant_covers_it(
    domains_target, granted, resolved
):
    domains, target = domains_target
    decision = decide(SCOPES, domains, granted, target, [str(a) for a in resolved])
    if not isinstance(decision, Allowed):
        return
    for text in decision.addresses:
        address = ipaddress.ip_address(text)
        cls = classify(address)
        covered = covers_address(granted, address, target.port)
        if cls is AddressClass.METADATA:
            assert covered
        elif cls is not AddressClass.PUBLIC:
            named = any(
                isinstance(g, HostGrant) and g.address is None and g.host == target.host
                for g in granted
            )
            assert covered or (decision.via is Via.NAME_GRANT and named)


@given(
    st.sampled_from(DOMAINS),
    st.sampled_from([80, 443]),
    st.lists(special_addresses | st.sampled_from(sorted(METADATA, key=str)), min_size=1),
)
def test_a_domain_resolving_only_to_special_addresses_is_refused(domain, port, resolved):
    assume(all(classify(a) is not AddressClass.PUBLIC for a in resolved))
    decision = decide(SCOPES, DOMAINS, (), Target(domain, port), [str(a) for a in resolved])
    assert isinstance(decision, Refusal) and decision.reason in ADDRESS_REASONS


@given(domain_lists.flatmap(lambda d: st.tuples(st.just(d), targets(d))), grants())
def test_nothing_is_admitted_without_the_scope(domains_target, granted):
    domains, target = domains_target
    refused = admit(("cameras:read",), domains, granted, target)
    assert isinstance(refused, Refusal) and refused.reason is Reason.SCOPE_MISSING


@given(grants())
def test_grants_survive_their_canonical_text(granted):
    for grant in granted:
        assume(isinstance(grant, NetworkGrant) or grant.address is None or "%" not in grant.host)
        assert parse_grant(str(grant)) == grant


# --- bounds -------------------------------------------------------------------------------------


def test_the_rate_bucket_refills_over_a_minute():
    bucket = RateBucket(60)
    assert all(bucket.take(0.0) for _ in range(60))
    assert not bucket.take(0.0)
    assert bucket.take(1.0) and not bucket.take(1.0)
    assert sum(bucket.take(1000.0) for _ in range(100)) == 60


def test_repeated_refusals_are_summarised_once_a_window():
    sampler = RefusalSampler(60)
    assert sampler.note(Reason.RATE_LIMITED, 0) == 1
    assert [sampler.note(Reason.RATE_LIMITED, t) for t in (1, 2, 3)] == [0, 0, 0]
    assert sampler.due(30) == {}
    assert sampler.due(61) == {Reason.RATE_LIMITED: 3}
    assert sampler.note(Reason.RATE_LIMITED, 62) == 1
    sampler.note(Reason.RATE_LIMITED, 63)
    assert sampler.note(Reason.RATE_LIMITED, 200) == 2  # the next row carries the count
    sampler.note(Reason.TOO_MANY_CONNECTIONS, 200)
    sampler.note(Reason.TOO_MANY_CONNECTIONS, 201)
    assert sampler.due(202, everything=True) == {Reason.TOO_MANY_CONNECTIONS: 1}


def test_the_servers_own_host_needs_an_address_and_port_named_exactly():
    grants = parse_grants(["192.168.1.0/24", "192.168.1.9:8554", "nvr.lan:554"])
    lan = decide(SCOPES, (), grants, parse_authority("192.168.1.9:8128"), [])
    assert isinstance(lan, Allowed) and lan.named == ()  # only the CIDR covers it
    refusal = own_host_refusal(lan, "192.168.1.9", own_host=True)
    assert refusal is not None and refusal.reason is Reason.ADDRESS_SERVER
    assert own_host_refusal(lan, "192.168.1.9", own_host=False) is None  # a camera of the LAN
    exact = decide(SCOPES, (), grants, parse_authority("192.168.1.9:8554"), [])
    assert isinstance(exact, Allowed) and own_host_refusal(exact, "192.168.1.9", True) is None
    by_name = decide(SCOPES, (), grants, name("nvr.lan", 554), ["192.168.1.9"])
    assert isinstance(by_name, Allowed) and own_host_refusal(by_name, "192.168.1.9", True) is None
    domain = decide(SCOPES, DOMAINS, (), name("api.example.com"), ["93.184.216.34"])
    assert isinstance(domain, Allowed) and own_host_refusal(domain, "93.184.216.34", True)


def test_an_open_connection_is_allowed_only_while_its_grant_stands():
    target = parse_authority("192.168.1.20:554")
    before = parse_grants(["192.168.1.0/24"])
    assert still_allowed(SCOPES, (), before, target, "192.168.1.20")
    assert not still_allowed(SCOPES, (), (), target, "192.168.1.20")
    assert not still_allowed((), (), before, target, "192.168.1.20")  # scope gone
    public = name("api.example.com")
    assert still_allowed(SCOPES, DOMAINS, (), public, "93.184.216.34")
