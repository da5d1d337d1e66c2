"""MJPEG multipart parsing: whole parts out, however the bytes are split."""

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pentarun.cameras.multipart import (
    MultipartError,
    MultipartReader,
    PartTooLarge,
    boundary_of,
)

BOUNDARY = b"myboundary"


def stream(parts, *, lengths=True, preamble=b"", epilogue=True):
    out = bytearray(preamble)
    for part in parts:
        out += b"--" + BOUNDARY + b"\r\nContent-Type: image/jpeg\r\n"
        if lengths:
            out += b"Content-Length: %d\r\n" % len(part)
        out += b"\r\n" + part + b"\r\n"
    if epilogue:
        out += b"--" + BOUNDARY + b"--\r\n"
    return bytes(out)


def split(data, cuts):
    points = sorted({c % (len(data) + 1) for c in cuts})
    pieces, last = [], 0
    for p in points:
        pieces.append(data[last:p])
        last = p
    pieces.append(data[last:])
    return pieces


def parse(pieces, max_part=1 << 20):
    reader = MultipartReader(BOUNDARY, max_part)
    out = []
    for piece in pieces:
        out += reader.feed(piece)
    return out, reader


# part bodies that cannot hold the delimiter line (a JPEG never has "\n--myboundary" either)
bodies = st.lists(
    st.binary(min_size=0, max_size=300).filter(lambda b: b"--" not in b and not b.endswith(b"\r")),
    min_size=1,
    max_size=8,
)


@settings(max_examples=300)
@given(
    bodies, st.lists(st.integers(min_value=0), max_size=30), st.booleans(), st.binary(max_size=20)
)
def test_any_chunking_gives_the_same_parts(parts, cuts, lengths, preamble):
    preamble = preamble.replace(b"-", b"")
    data = stream(parts, lengths=lengths, preamble=preamble)
    out, reader = parse(split(data, cuts))
    assert out == parts
    assert reader.ended


@given(st.lists(st.binary(min_size=1, max_size=200), min_size=1, max_size=5))
def test_with_lengths_a_part_may_hold_anything(parts):
    """With Content-Length a part is taken by count, even when it holds the delimiter."""
    parts = [p + b"\r\n--" + BOUNDARY for p in parts]
    out, _ = parse([stream(parts)])
    assert out == parts


def test_a_part_without_headers_and_bare_newlines():
    data = (
        b"--myboundary\r\n\r\nAAA\r\n--myboundary\nContent-Type: image/jpeg\n\nBBB\n--myboundary--"
    )
    assert parse([data])[0] == [b"AAA", b"BBB"]


def test_an_endless_stream_holds_at_most_one_part():
    reader = MultipartReader(BOUNDARY, 1000)
    assert reader.feed(b"--myboundary\r\nContent-Type: image/jpeg\r\n\r\n") == []
    with pytest.raises(PartTooLarge):
        for _ in range(100):
            reader.feed(b"x" * 100)


def test_a_declared_length_over_the_limit_is_refused_at_once():
    reader = MultipartReader(BOUNDARY, 1000)
    with pytest.raises(PartTooLarge):
        reader.feed(b"--myboundary\r\nContent-Length: 5000\r\n\r\n")


def test_garbage_without_a_delimiter_is_not_kept():
    reader = MultipartReader(BOUNDARY, 1000)
    for _ in range(1000):
        assert reader.feed(b"no delimiter here " * 10) == []
    assert len(reader._buf) < len(reader.delimiter)


@pytest.mark.parametrize(
    ("header", "boundary"),
    [
        ("multipart/x-mixed-replace; boundary=frame", b"frame"),
        ('multipart/x-mixed-replace;boundary="a b"', b"a b"),
        ("multipart/x-mixed-replace; boundary=--myboundary", b"myboundary"),
        ("Multipart/X-Mixed-Replace; charset=x; BOUNDARY=zz", b"zz"),
    ],
)
def test_boundary_of(header, boundary):
    assert boundary_of(header) == boundary


@pytest.mark.parametrize(
    "header", ["image/jpeg", "multipart/x-mixed-replace", "multipart/x; boundary=--"]
)
def test_boundary_of_refuses(header):
    with pytest.raises(MultipartError):
        boundary_of(header)
