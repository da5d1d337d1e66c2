"""A validation problem: stable machine-readable code, the file or field path, a message."""

from __future__ import annotations

import msgspec


class Problem(msgspec.Struct, frozen=True):
    code: str
    path: str
    message: str


def field(file: str, *parts: str | int) -> str:
    """`definition.json:security.data_classification[1]`"""
    text = ""
    for part in parts:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else part)
    return f"{file}:{text}" if text else file
