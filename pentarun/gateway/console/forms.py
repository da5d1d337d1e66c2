"""The configuration form of a plugin, generated from its manifest's `config_schema`. Pure.

    config_fields(schema, config) -> [Field]

One field per property of the schema (nested objects become fieldsets, up to MAX_DEPTH):
strings are text inputs (a password input for `format: password` or `writeOnly`), integers
and numbers number inputs within `minimum`/`maximum`, booleans checkboxes, `enum`s selects,
arrays of strings a text area with one item per line, anything else a JSON text area. A
field's `path` is its JSON path with dots ("camera.url"): the page's script builds the
configuration object from the paths, and puts each problem of the config route (path
"camera/url", or the parent's path and "'url' is a required property") at its field. The form
only shapes input: what is valid is decided by the config route against the same schema.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

MAX_DEPTH = 3
MAX_FIELDS = 200


@dataclass(frozen=True)
class Field:
    path: str  # "a.b": where the value goes in the configuration object
    label: str
    kind: str  # text | password | integer | number | boolean | select | list | json | group
    required: bool = False
    description: str = ""
    value: str = ""  # as the input shows it
    checked: bool = False
    options: tuple[str, ...] = ()
    minimum: float | None = None
    maximum: float | None = None
    children: tuple[Field, ...] = field(default_factory=tuple)

    @property
    def input_id(self) -> str:
        return "config-" + "-".join(self.path.split("."))

    @property
    def data_type(self) -> str:
        """How the page's script reads the input (console.js `readField`)."""
        return {
            "integer": "int",
            "number": "float",
            "boolean": "bool",
            "list": "list",
            "json": "json",
        }.get(self.kind, "string")


def _label(name: str, schema: dict[str, Any]) -> str:
    title = schema.get("title")
    if isinstance(title, str) and title.strip():
        return title.strip()[:120]
    return name.replace("_", " ").replace("-", " ").strip().capitalize() or name


def _shown(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    return json.dumps(value)


def _number(value: Any) -> float | None:
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


def _field(
    path: str, name: str, schema: dict[str, Any], *, value: Any, required: bool, depth: int
) -> Field:
    kind_of = schema.get("type")
    description = str(schema.get("description", ""))[:500]
    has_value = value is not None
    current = value if has_value else schema.get("default")
    common: dict[str, Any] = {
        "path": path,
        "label": _label(name, schema),
        "required": required,
        "description": description,
    }
    enum = schema.get("enum")
    if isinstance(enum, list) and enum and all(isinstance(e, str) for e in enum):
        return Field(kind="select", value=_shown(current), options=tuple(enum), **common)
    if kind_of == "boolean":
        return Field(kind="boolean", checked=current is True, **common)
    if kind_of in ("integer", "number"):
        return Field(
            kind=kind_of,
            value=_shown(current) if isinstance(current, int | float) else "",
            minimum=_number(schema.get("minimum")),
            maximum=_number(schema.get("maximum")),
            **common,
        )
    if kind_of == "string":
        secret = schema.get("format") == "password" or schema.get("writeOnly") is True
        return Field(
            kind="password" if secret else "text",
            value=_shown(current) if isinstance(current, str) else "",
            **common,
        )
    items = schema.get("items")
    if kind_of == "array" and isinstance(items, dict) and items.get("type") == "string":
        lines = (
            "\n".join(v for v in current if isinstance(v, str)) if isinstance(current, list) else ""
        )
        return Field(kind="list", value=lines, **common)
    properties = schema.get("properties")
    if kind_of == "object" and isinstance(properties, dict) and depth < MAX_DEPTH:
        inner = current if isinstance(current, dict) else {}
        return Field(
            kind="group",
            children=tuple(_fields(properties, schema.get("required"), inner, path, depth + 1)),
            **common,
        )
    return Field(
        kind="json", value="" if current is None else json.dumps(current, indent=2), **common
    )


def _fields(
    properties: dict[str, Any], required: Any, values: dict[str, Any], prefix: str, depth: int
) -> list[Field]:
    needed = set(required) if isinstance(required, list) else set()
    out = []
    for name, sub in list(properties.items())[:MAX_FIELDS]:
        path = f"{prefix}.{name}" if prefix else name
        schema = sub if isinstance(sub, dict) else {}
        out.append(
            _field(path, name, schema, value=values.get(name), required=name in needed, depth=depth)
        )
    return out


def config_fields(schema: dict[str, Any], config: dict[str, Any]) -> list[Field]:
    """The form's fields; [] when the schema declares no properties (then the page offers
    the whole configuration as JSON)."""
    properties = schema.get("properties")
    if not isinstance(properties, dict):
        return []
    return _fields(properties, schema.get("required"), config, "", 1)
