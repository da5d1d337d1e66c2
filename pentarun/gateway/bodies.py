"""Decoding request bodies safely: every malformed input is a BadRequest, never a 500.

    decode_json(raw, kind, what=..., max_depth=...) -> kind

Bytes, not text: invalid UTF-8 is a 400 like any other bad JSON. Nesting is bounded (msgspec
recurses, and a body nested ~1,000 deep raises RecursionError there; jsonschema recurses too),
so a decoded value is at most `max_depth` deep. Missing or wrong fields name the field.
Size is bounded before this is called (each route sets its own limit).
"""

from __future__ import annotations

from typing import Any, TypeVar, overload

import msgspec

from ..errors import BadRequest

T = TypeVar("T")
MAX_DEPTH = 32


def depth_exceeds(value: Any, limit: int) -> bool:
    """Whether `value` nests containers deeper than `limit` (iterative: no recursion)."""
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, dict):
            children: Any = item.values()
        elif isinstance(item, list | tuple):
            children = item
        else:
            continue
        if depth > limit:
            return True
        stack.extend((child, depth + 1) for child in children)
    return False


@overload
def decode_json(raw: bytes, *, what: str = ..., max_depth: int = ...) -> Any: ...
@overload
def decode_json(raw: bytes, kind: type[T], *, what: str = ..., max_depth: int = ...) -> T: ...
def decode_json(
    raw: bytes, kind: Any = Any, *, what: str = "request body", max_depth: int = MAX_DEPTH
) -> Any:
    """`raw` as `kind`, or BadRequest saying what is wrong (syntax, nesting, a field)."""
    try:
        generic = msgspec.json.decode(raw)
    except RecursionError:
        raise BadRequest(f"the {what} nests deeper than {max_depth} levels") from None
    except msgspec.DecodeError as exc:
        raise BadRequest(f"the {what} is not valid JSON: {exc}") from None
    except UnicodeDecodeError as exc:  # msgspec checks UTF-8 inside strings only here
        raise BadRequest(f"the {what} is not valid UTF-8: {exc.reason}") from None
    if depth_exceeds(generic, max_depth):
        raise BadRequest(f"the {what} nests deeper than {max_depth} levels")
    if kind is Any:
        return generic
    try:
        return msgspec.convert(generic, kind)
    except msgspec.ValidationError as exc:
        raise BadRequest(f"invalid {what}: {exc}") from None
