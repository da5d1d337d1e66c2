import contextlib

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pentarun.packages.versions import VersionError, parse_range, parse_version


@pytest.mark.parametrize(
    ("spec", "version", "admitted"),
    [
        (">=0.1,<1", "0.1.0", True), (">=0.1,<1", "0.9.9", True), (">=0.1,<1", "1.0.0", False),
        (">=1.2,<2", "1.1.9", False), ("==1.0.0", "1.0.0", True), ("!=1.0.0", "1.0.0", False),
        (">1.0.0", "1.0.1", True), ("<=1", "1.0.0", True), (">=1.0.0", "1.0.0-rc.1", False),
        ("<1.0.0", "1.0.0-rc.1", True), ("==1.0.0", "1.0.0+build.5", True),
    ],
)  # fmt: skip
def test_ranges(spec, version, admitted):
    assert parse_range(spec).admits(parse_version(version)) is admitted


@pytest.mark.parametrize(
    "text",
    ["1", "1.0", "01.0.0", "1.0.0.0", "v1.0.0", "", "1.0.0-", "x", "1.0.0\n", "1.0.0-rc.1\n"],
)
def test_bad_versions(text):
    with pytest.raises(VersionError):
        parse_version(text)


@pytest.mark.parametrize("text", ["", "1.0", ">=", "=>1", ">=1,", "~1", ">=a.b"])
def test_bad_ranges(text):
    with pytest.raises(VersionError):
        parse_range(text)


def test_whitespace_around_comparators_is_allowed_even_a_newline():
    assert parse_range(" >=1.0 , <2\n").admits(parse_version("1.5.0"))


def test_prerelease_ordering():
    order = ["1.0.0-alpha", "1.0.0-alpha.1", "1.0.0-alpha.beta", "1.0.0-beta.2", "1.0.0-beta.11",
             "1.0.0-rc.1", "1.0.0"]  # fmt: skip
    keys = [parse_version(v).key() for v in order]
    assert keys == sorted(keys)


@given(st.text(max_size=30))
def test_arbitrary_text_never_crashes(text):
    for parse in (parse_version, parse_range):
        with contextlib.suppress(VersionError):
            parse(text)
