import jwt
import pytest

from pentarun.errors import TokenInvalid
from pentarun.security.tokens import PluginTokens


def reason(exc_info):
    return exc_info.value.details["reason"]


def test_issue_and_verify():
    tokens = PluginTokens()
    token, expires = tokens.issue("cam", ["cameras:read"], ["p2", "p1"], 60, now=1000.0)
    claims = tokens.verify(token, "cam", now=1001.0)
    assert claims.props == ("p1", "p2") and claims.scp == ("cameras:read",)
    assert expires == 1060.0


@pytest.mark.parametrize(
    ("make", "expected"),
    [
        (lambda t: "", "missing"),
        (lambda t: t[:-4] + "AAAA", "invalid"),
        (lambda t: jwt.encode({"sub": "cam", "exp": 9e9, "gen": 0}, "x" * 32), "invalid"),
        (lambda t: "not a jwt", "invalid"),
    ],
)
def test_missing_and_forged_tokens_are_refused(make, expected):
    tokens = PluginTokens()
    token, _ = tokens.issue("cam", [], ["p1"], 60)
    with pytest.raises(TokenInvalid) as info:
        tokens.verify(make(token), "cam")
    assert reason(info) == expected


def test_expired_token_is_refused():
    tokens = PluginTokens()
    token, _ = tokens.issue("cam", [], ["p1"], 60, now=1000.0)
    with pytest.raises(TokenInvalid) as info:
        tokens.verify(token, "cam", now=1060.0)
    assert reason(info) == "expired"


def test_revocation_is_immediate_even_for_cached_tokens():
    tokens = PluginTokens()
    token, _ = tokens.issue("cam", [], ["p1"], 60)
    tokens.verify(token, "cam")
    tokens.revoke("cam")
    with pytest.raises(TokenInvalid) as info:
        tokens.verify(token, "cam")
    assert reason(info) == "revoked"
    fresh, _ = tokens.issue("cam", [], ["p1"], 60)
    assert tokens.verify(fresh, "cam").gen == 1


def test_token_of_another_plugin_is_refused():
    tokens = PluginTokens()
    token, _ = tokens.issue("other", [], ["p1"], 60)
    with pytest.raises(TokenInvalid) as info:
        tokens.verify(token, "cam")
    assert reason(info) == "wrong_plugin"


def test_token_from_another_server_run_is_refused():
    token, _ = PluginTokens().issue("cam", [], ["p1"], 60)
    with pytest.raises(TokenInvalid):
        PluginTokens().verify(token, "cam")
