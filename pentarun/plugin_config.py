"""A plugin's configuration, checked whole before anything stores it or sends it. Pure.

    check(config, schema, max_bytes) -> the configuration (a JSON object), or raises

A configuration that passes is a JSON object, matches the manifest's `config_schema` (every
problem reported at once, up to MAX_PROBLEMS: 422), and encodes to at most `max_bytes` (413).
`budget()` keeps that bound well under the IPC frame limit, so pushing a stored configuration
to its worker (ConfigUpdate now, Welcome at every start) can never fail: nothing half-applied
is stored.
Its nesting is bounded before it gets here (gateway/bodies.py), so the schema check cannot
recurse without end.
"""

from __future__ import annotations

from itertools import islice
from typing import Any

import msgspec
from jsonschema import Draft202012Validator

from .errors import PayloadTooLarge, Unprocessable

DEFAULT_SCHEMA: dict[str, Any] = {"type": "object"}
FRAME_SHARE = 8  # a configuration may use at most 1/8 of an IPC frame
MAX_PROBLEMS = 100  # reported at most (the first ones)


def budget(max_body_bytes: int, max_frame_bytes: int) -> int:
    """The largest configuration (encoded JSON bytes) a plugin may be given."""
    return max(1, min(max_body_bytes, max_frame_bytes // FRAME_SHARE))


def check(config: Any, schema: dict[str, Any], max_bytes: int) -> dict[str, Any]:
    size = len(msgspec.json.encode(config))
    if size > max_bytes:
        raise PayloadTooLarge(
            f"the configuration is {size} bytes; at most {max_bytes} are allowed",
            {"size_bytes": size, "limit_bytes": max_bytes},
        )
    errors = islice(Draft202012Validator(schema).iter_errors(config), MAX_PROBLEMS + 1)
    problems = [
        {"path": "/".join(str(p) for p in error.absolute_path), "message": error.message}
        for error in errors
    ]
    if not isinstance(config, dict):
        problems.insert(0, {"path": "", "message": "the configuration must be an object"})
    if problems:
        count = f"more than {MAX_PROBLEMS}" if len(problems) > MAX_PROBLEMS else len(problems)
        raise Unprocessable(
            f"the configuration does not match config_schema: {count} problem(s)",
            {"problems": problems[:MAX_PROBLEMS]},
        )
    assert isinstance(config, dict)
    return config
