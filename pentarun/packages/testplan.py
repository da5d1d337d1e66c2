"""tests/test_plan.json: the plugin's declared test cases. Pure."""

from __future__ import annotations

from typing import Any

import msgspec

from .problems import Problem, field

FILE = "tests/test_plan.json"
CATEGORIES = ("integration", "security", "load", "recovery")


class Expect(msgspec.Struct, frozen=True):
    ok: bool = True
    error: str | None = None
    status: int | None = None


class Case(msgspec.Struct, frozen=True):
    name: str
    category: str
    handler: str
    params: dict[str, Any] = {}
    expect: Expect = Expect()


class TestPlan(msgspec.Struct, frozen=True):
    cases: list[Case] = []

    def of(self, category: str) -> list[Case]:
        return [case for case in self.cases if case.category == category]


def validate_test_plan(
    raw: Any, handlers: set[str] | None
) -> tuple[TestPlan | None, list[Problem]]:
    """Check the plan; `handlers` None skips the cross-check (definition.json is unreadable)."""
    problems: list[Problem] = []

    def add(code: str, message: str, *path: str | int) -> None:
        problems.append(Problem(f"test_plan.{code}", field(FILE, *path), message))

    if not isinstance(raw, dict) or not isinstance(raw.get("cases"), list):
        add("wrong_type", 'must be an object with a list "cases"')
        return None, problems
    for extra in sorted(set(raw) - {"cases"}):
        add("unknown_field", "unknown field", extra)
    names: set[str] = set()
    for i, case in enumerate(raw["cases"]):
        if not isinstance(case, dict):
            add("wrong_type", "a case must be an object", "cases", i)
            continue
        for extra in sorted(set(case) - {"name", "category", "handler", "params", "expect"}):
            add("unknown_field", "unknown field", "cases", i, extra)
        name = case.get("name")
        if not isinstance(name, str) or not name:
            add("missing_field", "every case needs a name", "cases", i, "name")
        elif name in names:
            add("duplicate", f"two cases are named {name!r}", "cases", i, "name")
        else:
            names.add(name)
        if case.get("category") not in CATEGORIES:
            add(
                "invalid_value",
                f"category must be one of {list(CATEGORIES)}",
                "cases",
                i,
                "category",
            )
        handler = case.get("handler")
        if not isinstance(handler, str) or (handlers is not None and handler not in handlers):
            add(
                "undeclared_handler",
                f"{handler!r} is not a handler of definition.json",
                "cases",
                i,
                "handler",
            )
        if not isinstance(case.get("params", {}), dict):
            add("wrong_type", "params must be an object", "cases", i, "params")
        expect = case.get("expect", {})
        if not isinstance(expect, dict) or not isinstance(expect.get("ok", True), bool):
            add("wrong_type", 'expect must be an object like {"ok": true}', "cases", i, "expect")
        else:
            for extra in sorted(set(expect) - {"ok", "error", "status"}):
                add("unknown_field", "unknown field", "cases", i, "expect", extra)
            if expect.get("ok", True) and "error" in expect:
                add("invalid_value", "an expected error needs ok: false", "cases", i, "expect")
    if problems:
        return None, problems
    try:
        return msgspec.convert(raw, TestPlan), []
    except msgspec.ValidationError as exc:
        add("invalid", str(exc))
        return None, problems
