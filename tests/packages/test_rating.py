"""The security rating: on its scale, explained point by point, never raised by holding more."""

import msgspec
from hypothesis import given
from hypothesis import strategies as st

from pentarun.packages.manifest import Listener, Manifest, Security
from pentarun.packages.rating import BASE, HIGHEST, LOWEST, security_rating
from pentarun.security.scopes import SCOPES

scope_lists = st.lists(st.sampled_from(sorted(SCOPES)), max_size=8)
domain_lists = st.lists(st.sampled_from(["api.example.com", "cdn.example.org"]), max_size=2)
grant_lists = st.lists(
    st.sampled_from(["192.168.1.10:554", "10.0.0.0/24", "cam.lan:80"]), max_size=3
)
requirement_lists = st.lists(st.from_regex(r"[a-z]{1,8}==1\.[0-9]", fullmatch=True), max_size=3)
trait_lists = st.lists(st.sampled_from(["example", "handles_pii", "handles_phi"]), max_size=3)
classifications = st.lists(st.sampled_from(["internal", "pii", "phi"]), min_size=1, max_size=2)


def manifest(
    scopes=(), *, domains=(), listener=False, traits=("example",), classification=("internal",)
):
    return Manifest(
        key="demo",
        name="Demo",
        version="1.0.0",
        engine=">=0.1",
        traits=list(traits),
        security=Security(True, list(classification)),
        scopes=list(scopes),
        allowed_domains=list(domains),
        listener=Listener("api", 8130) if listener else None,
    )


@st.composite
def holdings(draw):
    """(manifest fields, requirements, sandbox_on, grants)"""
    fields = {
        "scopes": draw(scope_lists),
        "domains": draw(domain_lists),
        "listener": draw(st.booleans()),
        "traits": draw(trait_lists) or ["example"],
        "classification": draw(classifications),
    }
    return fields, draw(requirement_lists), draw(st.booleans()), draw(grant_lists)


def rate(fields, requirements, sandbox_on, grants):
    return security_rating(manifest(**fields), requirements, sandbox_on, grants)


@given(holdings())
def test_the_score_is_on_the_scale_and_the_reasons_add_up_to_it(held):
    rating = rate(*held)
    assert LOWEST <= rating.score <= HIGHEST
    assert rating.base == BASE
    assert rating.base + sum(r.delta for r in rating.reasons) == rating.score
    assert all(r.text and r.rule for r in rating.reasons)
    assert len({r.rule for r in rating.reasons}) == len(rating.reasons)  # one line per rule


@given(holdings(), st.sampled_from(sorted(SCOPES)))
def test_another_scope_never_raises_it(held, scope):
    fields, requirements, sandbox_on, grants = held
    more = {**fields, "scopes": [*fields["scopes"], scope]}
    assert rate(more, requirements, sandbox_on, grants).score <= rate(*held).score


@given(holdings(), st.sampled_from(["192.168.1.99:80", "172.16.0.0/12"]))
def test_another_grant_never_raises_it(held, grant):
    fields, requirements, sandbox_on, grants = held
    assert rate(fields, requirements, sandbox_on, [*grants, grant]).score <= rate(*held).score


@given(holdings(), st.sampled_from(["numpy==2.0", "requests>=2"]))
def test_another_requirement_never_raises_it(held, requirement):
    fields, requirements, sandbox_on, grants = held
    more = [*requirements, requirement]
    assert rate(fields, more, sandbox_on, grants).score <= rate(*held).score


@given(holdings())
def test_a_domain_a_listener_or_sensitive_data_never_raises_it(held):
    fields, requirements, sandbox_on, grants = held
    before = rate(*held).score
    for more in (
        {**fields, "domains": [*fields["domains"], "x.example.net"]},
        {**fields, "listener": True},
        {**fields, "traits": [*fields["traits"], "handles_pii"]},
    ):
        assert rate(more, requirements, sandbox_on, grants).score <= before


@given(holdings())
def test_the_sandbox_off_never_raises_it_and_rates_one(held):
    fields, requirements, _, grants = held
    off = rate(fields, requirements, False, grants)
    assert off.score == LOWEST <= rate(fields, requirements, True, grants).score
    assert off.reasons[0].rule == "sandbox" and '"off"' in off.reasons[0].text


def rules(rating):
    return {r.rule: r.delta for r in rating.reasons}


def test_read_only_is_the_safest():
    hello = security_rating(manifest(["properties:read"]))
    assert hello.score == 6
    assert rules(hello) == {"sandbox": 0, "least_privilege": 1}


def test_a_listener_costs_a_point_and_the_bonus():
    # the Home Assistant plugin: three read scopes and a listener
    ha = security_rating(
        manifest(["properties:read", "cameras:read", "streams:read"], listener=True)
    )
    assert ha.score == 4
    assert rules(ha) == {"sandbox": 0, "listener": -1}
    assert "port 8130" in ha.reasons[-1].text


def test_each_holding_has_its_line():
    rating = security_rating(
        manifest(
            ["properties:read", "cameras:write", "plugins:call", "proxy:egress"],
            domains=["api.example.com"],
            traits=["handles_phi"],
            classification=["phi"],
        ),
        ["greeter==1.0"],
        True,
        ["192.168.1.10:554"],
    )
    assert rules(rating) == {
        "sandbox": 0,
        "write_scopes": -1,
        "execute_scopes": -1,  # plugins:call; proxy:egress is rated as egress
        "high_risk": -1,  # 5 + 30 + 30 + 40 = 105, capped at 100
        "egress": -1,
        "egress_grants": -1,
        "requirements": -1,
        "sensitive_data": -1,
        "floor": 3,  # 5 - 7 = -2: the scale stops at 1
    }
    assert rating.score == 1
    texts = " | ".join(r.text for r in rating.reasons)
    for named in ("cameras:write", "plugins:call", "api.example.com", "192.168.1.10:554",
                  "greeter==1.0", "phi", "100/100"):  # fmt: skip
        assert named in texts


def test_egress_alone_and_the_json_shape():
    rating = security_rating(manifest(["properties:read", "proxy:egress"], domains=["a.example"]))
    assert rating.score == 4
    assert msgspec.to_builtins(rating) == {
        "score": 4,
        "base": 5,
        "reasons": [
            {
                "delta": 0,
                "text": "runs in the sandbox: it reaches the core only through its lanes",
                "rule": "sandbox",
            },
            {
                "delta": -1,
                "text": "can send data out of the host through the egress lane "
                "(allowed_domains: a.example)",
                "rule": "egress",
            },
        ],
    }


def test_a_long_list_is_cut_with_a_count():
    many = [f"p{i}==1.0" for i in range(9)]
    (line,) = [r for r in security_rating(manifest(), many).reasons if r.rule == "requirements"]
    assert "p4==1.0 and 4 more" in line.text and "p5" not in line.text
