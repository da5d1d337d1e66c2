"""Semantic versions and version ranges (`">=0.1,<1"`). Pure.

A version is MAJOR.MINOR.PATCH with optional `-prerelease` and `+build` (build is ignored when
comparing; a prerelease sorts before its release). In ranges a partial version (`1`, `0.1`)
means its missing parts are zero. A range is comma-separated comparators, all of which must
hold: `>=`, `>`, `<=`, `<`, `==`, `!=`.
"""

from __future__ import annotations

import operator
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

SEMVER = re.compile(
    r"^(0|[1-9]\d*)\.(0|[1-9]\d*)\.(0|[1-9]\d*)"
    r"(?:-((?:0|[1-9]\d*|\d*[a-zA-Z-][0-9a-zA-Z-]*)(?:\.(?:0|[1-9]\d*|\d*[a-zA-Z-][0-9a-zA-Z-]*))*))?"
    r"(?:\+([0-9a-zA-Z-]+(?:\.[0-9a-zA-Z-]+)*))?\Z"
)
PARTIAL = re.compile(r"^(0|[1-9]\d*)(?:\.(0|[1-9]\d*))?(?:\.(0|[1-9]\d*))?\Z")
COMPARATOR = re.compile(r"^\s*(>=|<=|==|!=|>|<)\s*(\S+)\s*\Z")

_OPS: dict[str, Callable[[Any, Any], bool]] = {
    ">=": operator.ge,
    ">": operator.gt,
    "<=": operator.le,
    "<": operator.lt,
    "==": operator.eq,
    "!=": operator.ne,
}


class VersionError(ValueError):
    pass


@dataclass(frozen=True)
class Version:
    major: int
    minor: int
    patch: int
    prerelease: tuple[int | str, ...] = ()

    def key(self) -> tuple[int, int, int, int, tuple[tuple[int, int | str], ...]]:
        pre = tuple((0, p) if isinstance(p, int) else (1, p) for p in self.prerelease)
        return (self.major, self.minor, self.patch, 0 if self.prerelease else 1, pre)

    def __str__(self) -> str:
        text = f"{self.major}.{self.minor}.{self.patch}"
        return text + ("-" + ".".join(str(p) for p in self.prerelease) if self.prerelease else "")


def parse_version(text: str) -> Version:
    match = SEMVER.fullmatch(text) if isinstance(text, str) else None
    if match is None:
        raise VersionError(f"{text!r} is not a semantic version (MAJOR.MINOR.PATCH)")
    major, minor, patch, pre, _build = match.groups()
    prerelease = tuple(int(p) if p.isdigit() else p for p in pre.split(".")) if pre else ()
    return Version(int(major), int(minor), int(patch), prerelease)


def _parse_bound(text: str) -> Version:
    if SEMVER.fullmatch(text):
        return parse_version(text)
    match = PARTIAL.fullmatch(text)
    if match is None:
        raise VersionError(f"{text!r} is not a version")
    major, minor, patch = (int(part or 0) for part in match.groups())
    return Version(major, minor, patch)


@dataclass(frozen=True)
class VersionRange:
    text: str
    comparators: tuple[tuple[str, Version], ...]

    def admits(self, version: Version) -> bool:
        return all(_OPS[op](version.key(), bound.key()) for op, bound in self.comparators)


def parse_range(text: str) -> VersionRange:
    if not isinstance(text, str) or not text.strip():
        raise VersionError("a version range must be a non-empty string such as '>=1.2,<2'")
    comparators = []
    for part in text.split(","):
        match = COMPARATOR.fullmatch(part)
        if match is None:
            raise VersionError(
                f"{part.strip()!r} is not a comparator (>=, >, <=, <, ==, != VERSION)"
            )
        comparators.append((match.group(1), _parse_bound(match.group(2))))
    return VersionRange(text, tuple(comparators))
