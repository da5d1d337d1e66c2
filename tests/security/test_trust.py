"""The trust store follows its directory, validates keys, writes them atomically."""

import base64
import os

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from hypothesis import given
from hypothesis import strategies as st

from pentarun.errors import BadRequest, Conflict, NotFound
from pentarun.security import signing
from pentarun.security.trust import TrustStore, is_curve_point, parse_public_key, raw_base64


def new_key():
    return Ed25519PrivateKey.generate().public_key()


def test_real_public_keys_are_curve_points():
    for _ in range(20):
        assert is_curve_point(new_key().public_bytes_raw())


def test_bytes_off_the_curve_are_refused():
    # y = 2 gives x^2 = 3 / (4d + 1): not a square mod p, so no point has it
    off_curve = (2).to_bytes(32, "little")
    assert not is_curve_point(off_curve)
    with pytest.raises(ValueError, match="not a curve point"):
        parse_public_key(base64.b64encode(off_curve).decode())
    too_big = ((1 << 255) - 1).to_bytes(32, "little")  # y >= p
    assert not is_curve_point(too_big)


@given(st.binary(min_size=32, max_size=32))
def test_curve_check_agrees_with_a_real_decoder_when_it_accepts(raw):
    if is_curve_point(raw):
        key = parse_public_key(base64.b64encode(raw).decode())
        assert key.public_bytes_raw() == raw


@pytest.mark.parametrize(
    "text", ["", "!!!", base64.b64encode(b"x" * 31).decode(), base64.b64encode(b"x" * 33).decode()]
)
def test_malformed_public_keys_are_refused(text):
    with pytest.raises(ValueError):
        parse_public_key(text)


def test_a_pem_public_key_is_accepted_too():
    _, public_pem = signing.generate_key()
    key = parse_public_key(public_pem.decode())
    assert raw_base64(key) == raw_base64(signing.load_public_key(public_pem))


def test_files_copied_in_changed_or_removed_count_at_once(tmp_path):
    store = TrustStore(tmp_path / "trust")
    assert store.keys() == {} and store.entries() == []
    (tmp_path / "trust").mkdir()
    _, first = signing.generate_key()
    (tmp_path / "trust" / "acme.pub").write_bytes(first)
    assert list(store.keys()) == ["acme"]
    assert not store.refresh()  # nothing changed since: no re-read
    _, second = signing.generate_key()
    (tmp_path / "trust" / "acme.pub").write_bytes(second)  # replaced in place
    os.utime(tmp_path / "trust" / "acme.pub", ns=(1, 1))  # even with an old mtime
    assert raw_base64(store.keys()["acme"]) == raw_base64(signing.load_public_key(second))
    (tmp_path / "trust" / "acme.pub").unlink()
    assert store.keys() == {}


def test_add_is_atomic_idempotent_and_refuses_a_different_key(tmp_path):
    store = TrustStore(tmp_path / "trust")
    key = raw_base64(new_key())
    entry = store.add("acme-2026", key)
    assert (entry.key_id, entry.public_key) == ("acme-2026", key) and entry.added_at
    assert sorted(p.name for p in (tmp_path / "trust").iterdir()) == ["acme-2026.pub"]
    assert signing.load_public_key((tmp_path / "trust" / "acme-2026.pub").read_bytes())
    assert store.add("acme-2026", key) == entry  # the same again is a no-op
    with pytest.raises(Conflict):
        store.add("acme-2026", raw_base64(new_key()))
    store.remove("acme-2026")
    assert store.entries() == []
    with pytest.raises(NotFound):
        store.remove("acme-2026")


@pytest.mark.parametrize(
    "key_id", ["", "../x", ".hidden", "a/b", "x" * 129, "sp ace", "abc\n", "abc\r", "abc\n\n"]
)
def test_key_ids_name_files_so_they_are_bounded(tmp_path, key_id):
    store = TrustStore(tmp_path / "trust")
    with pytest.raises(BadRequest):
        store.add(key_id, raw_base64(new_key()))
    with pytest.raises(NotFound):
        store.remove(key_id)
    assert not (tmp_path / "trust").exists()


def test_a_key_id_ending_in_a_newline_is_never_written(tmp_path):
    """`$` matches before a final newline: "acme\n" would name a file DELETE cannot remove."""
    store = TrustStore(tmp_path / "trust")
    with pytest.raises(BadRequest):
        store.add("acme\n", raw_base64(new_key()))
    assert not (tmp_path / "trust").exists()
    store.add("acme", raw_base64(new_key()))
    with pytest.raises(NotFound):
        store.remove("acme\n")  # not the same key as "acme"
    assert [e.key_id for e in store.entries()] == ["acme"]
