"""A plugin's configuration, checked whole before anything stores it or sends it. Pure.

    check(config, schema, max_bytes) -> the configuration (a JSON object), or raises

A configuration that passes is a JSON object, matches the manifest's `config_schema` (every
problem reported at once, up to MAX_PROBLEMS: 422), and encodes to at most `max_bytes` (413).
`budget()` keeps that bound well under the IPC frame limit, so pushing a stored configuration
to its worker (ConfigUpdate now, Welcome at every start) can never fail: nothing half-applied
is stored.
Its nesting is bounded before it gets here (gateway/bodies.py), so the schema check cannot
recurse without end.

    check_change(previous, config, schema, max_bytes) -> (configuration, audit detail)

`check` plus what the audit log keeps of a change: the new configuration's sha256 and size
and the top-level keys whose values changed (names clipped, at most MAX_KEYS_SHOWN of them),
never a value (a configuration may hold secrets).

Callers run these off the trio thread (`trio.to_thread.run_sync`): a configuration of the
largest allowed size never holds up the event loop. What remains: the schema is the plugin's
(`config_schema`, from a package an operator approved), and Python's `re` holds the GIL while
it matches, so a catastrophic `pattern` in it can still stall the whole process while one
configuration is checked.
"""

from __future__ import annotations

import hashlib
from itertools import islice
from typing import Any

import msgspec
from jsonschema import Draft202012Validator

from .errors import PayloadTooLarge, Unprocessable

DEFAULT_SCHEMA: dict[str, Any] = {"type": "object"}
FRAME_SHARE = 8  # a configuration may use at most 1/8 of an IPC frame
MAX_PROBLEMS = 100  # reported at most (the first ones)
MAX_KEYS_SHOWN = 50  # changed top-level keys an audit row names
MAX_KEY_SHOWN = 64  # characters of each


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


def _canonical(value: Any) -> bytes:
    return msgspec.json.encode(value, order="sorted")


def change_detail(previous: dict[str, Any], config: dict[str, Any]) -> dict[str, Any]:
    """What an audit row says of a configuration change: digest, size and changed keys."""
    encoded = _canonical(config)
    changed = sorted(
        name
        for name in previous.keys() | config.keys()
        if name not in previous
        or name not in config
        or _canonical(previous[name]) != _canonical(config[name])
    )
    return {
        "sha256": hashlib.sha256(encoded).hexdigest(),
        "size_bytes": len(encoded),
        "keys_changed": [
            name if len(name) <= MAX_KEY_SHOWN else name[: MAX_KEY_SHOWN - 1] + "…"
            for name in changed[:MAX_KEYS_SHOWN]
        ],
        "keys_changed_count": len(changed),
    }


def check_change(
    previous: dict[str, Any], config: Any, schema: dict[str, Any], max_bytes: int
) -> tuple[dict[str, Any], dict[str, Any]]:
    """`check(config, ...)` and the audit detail of replacing `previous` with it."""
    checked = check(config, schema, max_bytes)
    return checked, change_detail(previous, checked)
