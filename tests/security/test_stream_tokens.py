"""Stream tokens name the key that minted them and die with it; callers cannot be forged."""

import time

import jwt
import pytest
from hypothesis import given
from hypothesis import strategies as st

from pentarun.errors import BadRequest, Forbidden, TokenInvalid
from pentarun.security import ha_keys
from pentarun.security.stream_tokens import CALLER_TTL_S, StreamTokens
from pentarun.store import records
from pentarun.store.db import open_database

SECRET = b"s" * 32
TOKENS = StreamTokens(SECRET)


def reason(exc_info: pytest.ExceptionInfo[Exception]) -> str:
    return exc_info.value.details["reason"]


def test_a_token_carries_the_key_that_minted_it():
    issued = TOKENS.issue("p1", "cam", "main", "mjpeg", key_id="k1", ttl_s=60, now=1000.0)
    assert issued.expires_in == 60 and issued.expires_at == 1060.0
    claims = TOKENS.check(issued.token, "cam", now=1001.0)
    assert (claims.prop, claims.cam, claims.kid, claims.stream) == ("p1", "cam", "k1", "main")
    assert TOKENS.verify(issued.token, "cam", now=1001.0)["kid"] == "k1"


def test_refusals_say_why():
    issued = TOKENS.issue("p1", "cam", "main", "mjpeg", key_id="k1", ttl_s=60, now=1000.0)
    with pytest.raises(TokenInvalid) as expired:
        TOKENS.check(issued.token, "cam", now=1060.0)
    assert reason(expired) == "expired"
    with pytest.raises(Forbidden) as wrong:
        TOKENS.check(issued.token, "other", now=1001.0)
    assert reason(wrong) == "wrong_camera"
    with pytest.raises(TokenInvalid) as forged:
        StreamTokens(b"x" * 32).check(issued.token, "cam", now=1001.0)
    assert reason(forged) == "invalid"
    with pytest.raises(TokenInvalid) as huge:
        TOKENS.check("a" * 10_000, "cam")
    assert reason(huge) == "invalid"


def test_a_token_minted_before_key_binding_is_refused():
    legacy = jwt.encode(
        {"prop": "p1", "cam": "cam", "stream": "main", "exp": time.time() + 300, "jti": "x"},
        SECRET,
        algorithm="HS256",
    )
    with pytest.raises(TokenInvalid) as refused:
        TOKENS.check(legacy, "cam")
    assert reason(refused) == "unbound"


def test_issuing_needs_a_key_and_a_sane_lifetime():
    for key_id in ("", "k1\n", "a.b"):
        with pytest.raises(BadRequest):
            TOKENS.issue("p1", "cam", "main", "mjpeg", key_id=key_id)
    for ttl in (0, -1, 24 * 3600 + 1):
        with pytest.raises(BadRequest):
            TOKENS.issue("p1", "cam", "main", "mjpeg", key_id="k1", ttl_s=ttl)


def test_a_caller_names_its_key_for_its_property_only_while_fresh():
    caller = TOKENS.sign_caller("k1", "p1", now=1000.0)
    assert TOKENS.verify_caller(caller, "p1", now=1000.0 + CALLER_TTL_S - 1).key_id == "k1"
    with pytest.raises(Forbidden) as expired:
        TOKENS.verify_caller(caller, "p1", now=1000.0 + CALLER_TTL_S)
    assert reason(expired) == "caller_expired"
    with pytest.raises(Forbidden) as other_property:
        TOKENS.verify_caller(caller, "p2", now=1000.0)
    assert reason(other_property) == "bad_caller"
    with pytest.raises(Forbidden):
        StreamTokens(b"x" * 32).verify_caller(caller, "p1", now=1000.0)
    version, key, expires, mac = caller.split(".")
    for forged in (
        f"{version}.k2.{expires}.{mac}",  # another key
        f"{version}.{key}.{int(expires) + 3600}.{mac}",  # a longer life
        "",
        "c1",
        f"{version}.{key}.{expires}",
        f"{version}.{key}.\u00b2.{mac}",  # a digit to isdigit(), not to int()
        f"{version}.{key}\n.{expires}.{mac}",
    ):
        with pytest.raises(Forbidden):
            TOKENS.verify_caller(forged, "p1", now=1000.0)


@given(st.text(max_size=300))
def test_no_arbitrary_text_is_a_caller(text):
    with pytest.raises(Forbidden):
        TOKENS.verify_caller(text, "p1")


async def test_a_token_and_a_caller_die_with_their_key(tmp_path):
    async with open_database(tmp_path / "db.sqlite") as db:
        await records.create_property(db, "p1", "One")
        await records.create_property(db, "p2", "Two")
        key, _ = await ha_keys.create_key(db, "p1", "ha")
        caller = TOKENS.sign_caller(key.id, "p1")
        issued = ha_keys.issue_stream_token(
            db, TOKENS, caller, "p1", "cam", stream="main", protocol="mjpeg", ttl_s=3600
        )
        claims, row = ha_keys.check_stream_token(db, TOKENS, issued["token"], "cam")
        assert claims.kid == key.id and row.id == key.id
        # a token claiming another property than its key's is refused like a revoked one
        other = TOKENS.issue("p2", "cam", "main", "mjpeg", key_id=key.id)
        with pytest.raises(TokenInvalid) as foreign:
            ha_keys.check_stream_token(db, TOKENS, other.token, "cam")
        assert reason(foreign) == "key_revoked"
        assert await records.revoke_ha_key(db, key.id) == 1
        with pytest.raises(TokenInvalid) as revoked:
            ha_keys.check_stream_token(db, TOKENS, issued["token"], "cam")
        assert reason(revoked) == "key_revoked"
        with pytest.raises(Forbidden) as no_more:
            ha_keys.issue_stream_token(
                db, TOKENS, caller, "p1", "cam", stream="main", protocol="mjpeg"
            )
        assert reason(no_more) == "key_revoked"


async def test_keys_may_carry_their_own_rate_limit(tmp_path):
    async with open_database(tmp_path / "db.sqlite") as db:
        await records.create_property(db, "p1", "One")
        limited, text = await ha_keys.create_key(db, "p1", "cams", records.HaKeyRateLimit(1200, 60))
        plain, _ = await ha_keys.create_key(db, "p1", "plain")
        assert records.get_ha_key(db, limited.id).rate_limit == records.HaKeyRateLimit(1200, 60)
        assert records.get_ha_key(db, plain.id).rate_limit is None
        assert {k.id for k in records.ha_keys_of(db, "p1")} == {limited.id, plain.id}
        assert ha_keys.authenticate(db, {"X-API-Key": text}).id == limited.id
        for bad in (records.HaKeyRateLimit(0, 60), records.HaKeyRateLimit(10, 0)):
            with pytest.raises(BadRequest):
                await ha_keys.create_key(db, "p1", "bad", bad)
        with pytest.raises(BadRequest):
            await ha_keys.create_key(db, "p1", "x" * 201)
