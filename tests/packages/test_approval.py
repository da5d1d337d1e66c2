"""What needs approval, the one digest an operator echoes, and every scope shown."""

import msgspec
from hypothesis import given
from hypothesis import strategies as st

from pentarun.packages.approval import (
    Approval,
    ResourceRequest,
    approval_for,
    digest_of,
    scope_grants,
    wrong_digest_message,
)
from pentarun.security.scopes import SCOPES, Level, needs_approval

scope_lists = st.lists(st.sampled_from(sorted(SCOPES)), max_size=8)
requirement_lists = st.lists(st.from_regex(r"[a-z]{1,8}==1\.[0-9]", fullmatch=True), max_size=4)
levels = st.sampled_from(list(Level))
digests = st.from_regex(r"[0-9a-f]{64}", fullmatch=True)


def approval(scopes, requirements=(), level=Level.READ, sha="a" * 64):
    return approval_for(
        key="demo",
        version="1.0.0",
        package_sha256=sha,
        scopes=list(scopes),
        requirements=list(requirements),
        auto_approve=level,
    )


def test_read_scopes_alone_need_no_approval():
    assert approval(["properties:read", "cameras:read"]) is None


def test_every_requested_scope_is_shown_with_its_need():
    found = approval(["properties:read", "cameras:write"])
    assert found is not None
    assert msgspec.to_builtins(found.scopes) == [
        {"scope": "properties:read", "level": "read", "risk": 5, "needs_approval": False},
        {"scope": "cameras:write", "level": "write", "risk": 30, "needs_approval": True},
    ]
    assert found.risk_score == 35
    as_json = msgspec.to_builtins(found)
    assert [k for k in as_json if "digest" in k] == ["digest"]  # one digest at the top
    assert as_json["package"] == {"key": "demo", "version": "1.0.0", "sha256": "a" * 64}


def test_requirements_alone_need_approval_and_scopes_are_still_listed():
    found = approval(["properties:read"], ["greeter==1.0.0"])
    assert found is not None and found.requirements == ["greeter==1.0.0"]
    assert [(g.scope, g.needs_approval) for g in found.scopes] == [("properties:read", False)]


def test_echoing_the_package_hash_is_told_apart():
    found = approval(["cameras:write"])
    assert "package's sha256" in wrong_digest_message("a" * 64, found)
    assert "echo pending_approval.digest" in wrong_digest_message("0" * 64, found)


def test_approvals_stored_before_the_reshape_still_decode():
    old = {"requirements": [], "scopes": [{"scope": "cameras:write", "level": "write", "risk": 30}],
           "risk_score": 30, "package_digest": "b" * 64, "digest": "c" * 64}  # fmt: skip
    decoded = msgspec.convert(old, Approval)
    assert decoded.digest == "c" * 64 and decoded.scopes[0].needs_approval


@given(scope_lists, requirement_lists, levels, digests)
def test_approval_needed_exactly_when_a_requirement_or_a_scope_needs_it(scopes, reqs, level, sha):
    found = approval(scopes, reqs, level, sha)
    needed = bool(reqs) or any(needs_approval(s, level) for s in scopes)
    assert (found is not None) == needed
    if found is not None:
        assert [g.scope for g in found.scopes] == list(dict.fromkeys(scopes))
        assert all(g.needs_approval == needs_approval(g.scope, level) for g in found.scopes)
        assert found.digest == digest_of(found) and len(found.digest) == 64
        assert found.digest != found.package.sha256


@given(scope_lists, requirement_lists, levels, digests)
def test_the_digest_is_deterministic(scopes, reqs, level, sha):
    assert approval(scopes, reqs, level, sha) == approval(scopes, reqs, level, sha)


@given(scope_lists, requirement_lists, digests, digests)
def test_the_digest_changes_with_whatever_is_approved(scopes, reqs, sha, other_sha):
    base = approval([*scopes, "cameras:write"], reqs, Level.READ, sha)
    assert base is not None
    other_package = approval([*scopes, "cameras:write"], reqs, Level.READ, other_sha)
    more_requirements = approval([*scopes, "cameras:write"], [*reqs, "extra==9.9"], Level.READ, sha)
    assert more_requirements is not None and more_requirements.digest != base.digest
    assert other_package is not None
    assert (other_package.digest == base.digest) == (sha == other_sha)
    if "plugins:call" not in scopes:
        more_scopes = approval([*scopes, "cameras:write", "plugins:call"], reqs, Level.READ, sha)
        assert more_scopes is not None and more_scopes.digest != base.digest


@given(scope_lists, levels)
def test_admin_scopes_never_auto_approve(scopes, level):
    for grant in scope_grants(scopes, level):
        if SCOPES[grant.scope].level is Level.ADMIN:
            assert grant.needs_approval


def test_egress_domains_and_resources_are_part_of_what_is_approved():
    resources = ResourceRequest(memory_limit_mb=256, cpu_limit=0.5, max_processes=64)
    base = dict(key="k", version="1", package_sha256="s", scopes=["proxy:egress"])
    base |= dict(requirements=[], auto_approve=Level.READ, resources=resources)
    one = approval_for(**base, allowed_domains=["api.example.com"])
    assert one is not None and one.allowed_domains == ["api.example.com"]
    assert one.resources == resources
    other = approval_for(**base, allowed_domains=["evil.example.com"])
    assert other is not None and other.digest != one.digest
    bigger = approval_for(
        **{**base, "resources": ResourceRequest(4096, 2.0, 512)},
        allowed_domains=["api.example.com"],
    )
    assert bigger is not None and bigger.digest != one.digest
