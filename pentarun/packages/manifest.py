"""definition.json: the Manifest Struct and `validate_manifest()`. Pure.

Every rule of SPEC §2 is checked and every problem is reported, not just the first; each has
a stable code (`manifest.<rule>`), the field path and a message. Only a manifest without
problems becomes a `Manifest`.
"""

from __future__ import annotations

import difflib
import ipaddress
import re
from collections.abc import Collection, Mapping
from typing import Any

import msgspec
from jsonschema import Draft202012Validator
from jsonschema.exceptions import SchemaError

from ..security.scopes import SCOPES
from .problems import Problem, field
from .versions import VersionError, VersionRange, parse_range, parse_version

FILE = "definition.json"
KEY = re.compile(r"^[a-z][a-z0-9-]{1,62}\Z")
NAME = re.compile(r"^[a-z][a-z0-9_.-]{0,127}\Z")
IDENT = re.compile(r"^[A-Za-z][A-Za-z0-9_.-]{0,63}\Z")
EVENT = re.compile(r"^[a-z][a-z0-9_]*(\.[a-z][a-z0-9_]*)+\Z")
HIPAA = re.compile(r"^164\.\d{3}(\([a-z0-9]+\))+\Z")
LABEL = re.compile(r"^(?!-)[a-z0-9-]{1,63}(?<!-)\Z")
RESERVED_TRAITS = {"admin", "root", "system"}
CLASSIFICATIONS = {"public", "internal", "confidential", "pii", "phi"}
AUDIT_LEVELS = {"none", "basic", "detailed", "complete"}
METHODS = {"GET", "POST", "PUT", "PATCH", "DELETE"}
LISTENER_AUTH = {"property_key"}
BLOCKED_SUFFIXES = (".localhost", ".local", ".internal", ".localdomain", ".home.arpa")
KNOWN_FIELDS = {
    "key", "name", "version", "description", "engine", "contracts", "traits", "scopes",
    "handlers", "listener", "routes", "events", "hooks", "dependencies", "allowed_domains",
    "security", "compliance", "health_check", "resources", "config_schema", "ui", "idempotent",
}  # fmt: skip


class Installed(msgspec.Struct, frozen=True):
    """An installed plugin as an install's dependency check sees it."""

    version: str
    dependencies: dict[str, str] = {}


class RateLimit(msgspec.Struct, frozen=True):
    requests: int = 60
    window_s: float = 60.0


class Listener(msgspec.Struct, frozen=True):
    name: str
    port: int
    auth: str = "property_key"
    rate_limit: RateLimit = RateLimit()


class Route(msgspec.Struct, frozen=True):
    method: str
    path: str
    handler: str
    listener: str
    # this route also accepts `?token=<stream token>` whose camera equals this path parameter
    token_param: str | None = None


class Events(msgspec.Struct, frozen=True):
    subscribe: list[str] = []
    publish: list[str] = []


class Hook(msgspec.Struct, frozen=True):
    priority: int = 0
    timeout_ms: int = 1000


class Security(msgspec.Struct, frozen=True):
    authentication_required: bool
    data_classification: list[str]


class Compliance(msgspec.Struct, frozen=True):
    audit_level: str = "basic"
    hipaa_controls: list[str] = []


class HealthCheck(msgspec.Struct, frozen=True):
    """Declared values override the server's `supervisor.health_*` defaults for this plugin."""

    interval_s: float | None = None
    timeout_s: float | None = None


class Resources(msgspec.Struct, frozen=True):
    memory_limit: int = 256  # MB, enforced by the kernel (cgroup) in the sandbox
    cpu_limit: float = 0.5  # CPUs, a CPU quota in the sandbox
    max_processes: int = 64  # processes and threads of the worker (cgroup pids.max)


class Manifest(msgspec.Struct, frozen=True):
    key: str
    name: str
    version: str
    engine: str
    traits: list[str]
    security: Security
    description: str = ""
    contracts: list[str] = []
    scopes: list[str] = []
    handlers: list[str] = []
    listener: Listener | None = None
    routes: list[Route] = []
    events: Events = Events()
    hooks: dict[str, Hook] = {}
    dependencies: dict[str, str] = {}
    allowed_domains: list[str] = []
    compliance: Compliance = Compliance()
    health_check: HealthCheck = HealthCheck()
    resources: Resources = Resources()
    config_schema: dict[str, Any] = msgspec.field(
        default_factory=lambda: {"type": "object", "properties": {}}
    )
    ui: dict[str, str] = {}
    # handlers safe to run twice: retried once on the next worker when one dies mid-call
    idempotent: list[str] = []

    def is_idempotent(self, handler: str, method: str | None = None) -> bool:
        """May a call of `handler` that was in flight when its worker died run again?

        Declared `idempotent` handlers may, and so may the GET routes of the plugin's listener
        (`method` is the HTTP method of a listener call; None for other calls).
        """
        if handler in self.idempotent:
            return True
        return method == "GET" and any(
            r.method == "GET" and r.handler == handler for r in self.routes
        )


def did_you_mean(word: str, choices: Collection[str]) -> str:
    """` (did you mean 'x'?)` for the closest of `choices`, or '' when none is close."""
    close = difflib.get_close_matches(word, sorted(choices), n=1, cutoff=0.6)
    return f" (did you mean {close[0]!r}?)" if close else ""


class _Checker:
    def __init__(self) -> None:
        self.problems: list[Problem] = []

    def unknown_fields(
        self, obj: Mapping[str, Any], path: tuple[str | int, ...], known: Collection[str]
    ) -> None:
        for name in sorted(set(obj) - set(known)):
            self.add("unknown_field", (*path, name), "unknown field" + did_you_mean(name, known))

    def add(self, code: str, path: tuple[str | int, ...], message: str) -> None:
        self.problems.append(Problem(f"manifest.{code}", field(FILE, *path), message))

    def typed(self, value: Any, kind: type | tuple[type, ...], path: tuple[str | int, ...],
              what: str) -> bool:  # fmt: skip
        kinds = kind if isinstance(kind, tuple) else (kind,)
        # bool is an int in Python, never in a manifest
        ok = isinstance(value, kinds) and not (isinstance(value, bool) and bool not in kinds)
        if not ok:
            self.add("wrong_type", path, f"must be {what}")
        return ok

    def strings(self, value: Any, path: tuple[str | int, ...]) -> list[str]:
        if not self.typed(value, list, path, "a list of strings"):
            return []
        out = []
        for i, item in enumerate(value):
            if self.typed(item, str, (*path, i), "a string"):
                out.append(item)
        if len(set(out)) != len(out):
            self.add("duplicate", path, "entries must be unique")
        return out

    def number(self, value: Any, path: tuple[str | int, ...], low: float, high: float,
               integer: bool = False) -> None:  # fmt: skip
        kinds: tuple[type, ...] = (int,) if integer else (int, float)
        what = "an integer" if integer else "a number"
        if self.typed(value, kinds, path, what) and not low <= value <= high:
            self.add("out_of_range", path, f"must be between {low:g} and {high:g}")


def public_hostname_problem(host: str) -> str | None:
    """Why `host` is not an acceptable egress domain, or None."""
    name = host.lower().rstrip(".")
    try:
        ipaddress.ip_address(name.strip("[]"))
        return "IP literals are not allowed; name a domain"
    except ValueError:
        pass
    if name == "localhost" or name.endswith(BLOCKED_SUFFIXES):
        return "local and internal names are not allowed"
    labels = name.split(".")
    if len(name) > 253 or len(labels) < 2 or not all(LABEL.fullmatch(label) for label in labels):
        return "not a valid public hostname"
    if labels[-1].isdigit():
        return "not a valid public hostname"
    return None


def validate_manifest(
    raw: Any,
    *,
    identity: tuple[str, str] | None = None,
    engine_version: str,
    installed: Mapping[str, Installed] | None = None,
) -> tuple[Manifest | None, list[Problem]]:
    """Check a parsed definition.json.

    `identity` is plugin.id's (key, version); `installed` (at install: every other installed
    plugin) resolves the dependencies: each must be installed in a version its range admits,
    and none may lead back to this plugin. None (authoring: `plugin validate`) checks only
    the ranges' syntax.
    """
    c = _Checker()
    if not isinstance(raw, dict):
        c.add("wrong_type", (), "definition.json must be a JSON object")
        return None, c.problems
    c.unknown_fields(raw, (), KNOWN_FIELDS)
    for name in ("key", "name", "version", "engine", "traits", "security"):
        if name not in raw:
            c.add("missing_field", (name,), "required field")

    key = raw.get("key")
    if "key" in raw and c.typed(key, str, ("key",), "a string"):
        assert isinstance(key, str)
        if not KEY.fullmatch(key):
            c.add("invalid_key", ("key",), f"must match {KEY.pattern}")
        elif identity and key != identity[0]:
            c.add("identity_mismatch", ("key",), f"plugin.id says key {identity[0]!r}")
    if "name" in raw and c.typed(raw["name"], str, ("name",), "a string") and not raw["name"]:
        c.add("empty", ("name",), "must not be empty")
    if "description" in raw:
        c.typed(raw["description"], str, ("description",), "a string")
    if "version" in raw and c.typed(raw["version"], str, ("version",), "a string"):
        try:
            parse_version(raw["version"])
            if identity and raw["version"] != identity[1]:
                c.add("identity_mismatch", ("version",), f"plugin.id says version {identity[1]!r}")
        except VersionError as exc:
            c.add("invalid_version", ("version",), str(exc))
    if "engine" in raw and c.typed(raw["engine"], str, ("engine",), "a version range"):
        try:
            if not parse_range(raw["engine"]).admits(parse_version(engine_version)):
                c.add(
                    "engine_incompatible",
                    ("engine",),
                    f"{raw['engine']!r} does not admit pentarun {engine_version}",
                )
        except VersionError as exc:
            c.add("invalid_range", ("engine",), str(exc))
    for i, name in enumerate(c.strings(raw.get("contracts", []), ("contracts",))):
        if not IDENT.fullmatch(name):
            c.add("invalid_name", ("contracts", i), f"must match {IDENT.pattern}")

    traits = c.strings(raw.get("traits", []), ("traits",))
    if "traits" in raw and not traits and isinstance(raw["traits"], list):
        c.add("no_traits", ("traits",), "declare at least one trait")
    for i, trait in enumerate(traits):
        if trait in RESERVED_TRAITS:
            c.add("reserved_trait", ("traits", i), f"trait {trait!r} is reserved")
        elif not IDENT.fullmatch(trait):
            c.add("invalid_name", ("traits", i), f"must match {IDENT.pattern}")

    scopes = c.strings(raw.get("scopes", []), ("scopes",))
    for i, scope in enumerate(scopes):
        if scope not in SCOPES:
            hint = did_you_mean(scope, SCOPES)
            c.add("unknown_scope", ("scopes", i), f"unknown scope {scope!r}{hint}")

    handlers = c.strings(raw.get("handlers", []), ("handlers",))
    for i, handler in enumerate(handlers):
        if not NAME.fullmatch(handler):
            c.add("invalid_name", ("handlers", i), f"must match {NAME.pattern}")

    for i, name in enumerate(c.strings(raw.get("idempotent", []), ("idempotent",))):
        if name not in handlers:
            c.add(
                "undeclared_handler",
                ("idempotent", i),
                f"{name!r} is not in handlers" + did_you_mean(name, handlers),
            )

    listener_name = _check_listener(c, raw)
    _check_routes(c, raw, set(handlers), listener_name)
    _check_events(c, raw, set(scopes))
    _check_hooks(c, raw)
    _check_dependencies(c, raw, key if isinstance(key, str) else "", installed)

    domains = c.strings(raw.get("allowed_domains", []), ("allowed_domains",))
    for i, domain in enumerate(domains):
        why = public_hostname_problem(domain)
        if why:
            c.add("invalid_domain", ("allowed_domains", i), why)

    classification = _check_security(c, raw)
    controls = _check_compliance(c, raw)
    if "handles_phi" in traits:
        if "phi" not in classification:
            c.add(
                "trait_inconsistent",
                ("security", "data_classification"),
                "trait handles_phi requires classification 'phi'",
            )
        if not controls:
            c.add(
                "trait_inconsistent",
                ("compliance", "hipaa_controls"),
                "trait handles_phi requires HIPAA controls such as '164.312(a)'",
            )
    if "handles_pii" in traits and "pii" not in classification:
        c.add(
            "trait_inconsistent",
            ("security", "data_classification"),
            "trait handles_pii requires classification 'pii'",
        )
    if "external_service" in traits and not domains:
        c.add(
            "trait_inconsistent",
            ("allowed_domains",),
            "trait external_service requires allowed_domains",
        )
    if "proxy:egress" in scopes and not domains:
        c.add(
            "scope_inconsistent",
            ("allowed_domains",),
            "scope proxy:egress requires allowed_domains",
        )

    _check_objects(c, raw)
    if c.problems:
        return None, c.problems
    try:
        return msgspec.convert(raw, Manifest), []
    except msgspec.ValidationError as exc:  # a shape the checks above did not foresee
        c.add("invalid", (), str(exc))
        return None, c.problems


def _check_listener(c: _Checker, raw: dict[str, Any]) -> str | None:
    listener = raw.get("listener")
    if listener is None:
        return None
    path: tuple[str | int, ...] = ("listener",)
    if not c.typed(listener, dict, path, "an object"):
        return None
    c.unknown_fields(listener, path, ("name", "port", "auth", "rate_limit"))
    name = listener.get("name")
    if c.typed(name, str, (*path, "name"), "a string") and not KEY.fullmatch(name):
        c.add("invalid_name", (*path, "name"), f"must match {KEY.pattern}")
    c.number(listener.get("port"), (*path, "port"), 1, 65535, integer=True)
    auth = listener.get("auth", "property_key")
    if not isinstance(auth, str) or auth not in LISTENER_AUTH:
        c.add("invalid_value", (*path, "auth"), f"must be one of {sorted(LISTENER_AUTH)}")
    limit = listener.get("rate_limit", {})
    if c.typed(limit, dict, (*path, "rate_limit"), "an object"):
        c.unknown_fields(limit, (*path, "rate_limit"), ("requests", "window_s"))
        c.number(limit.get("requests", 60), (*path, "rate_limit", "requests"), 1, 1e6, True)
        c.number(limit.get("window_s", 60), (*path, "rate_limit", "window_s"), 0.001, 86400)
    return name if isinstance(name, str) else None


def _check_routes(
    c: _Checker, raw: dict[str, Any], handlers: set[str], listener: str | None
) -> None:
    routes = raw.get("routes", [])
    if not c.typed(routes, list, ("routes",), "a list of routes"):
        return
    seen: set[tuple[str, str, str]] = set()
    for i, route in enumerate(routes):
        path: tuple[str | int, ...] = ("routes", i)
        if not c.typed(route, dict, path, "an object"):
            continue
        for name in ("method", "path", "handler", "listener"):
            if not isinstance(route.get(name), str):
                c.add("missing_field", (*path, name), "required string field")
        c.unknown_fields(route, path, ("method", "path", "handler", "listener", "token_param"))
        method, rpath = route.get("method"), route.get("path")
        if isinstance(method, str) and method not in METHODS:
            c.add("invalid_value", (*path, "method"), f"must be one of {sorted(METHODS)}")
        if isinstance(rpath, str) and (not rpath.startswith("/") or "//" in rpath or ".." in rpath):
            c.add("invalid_value", (*path, "path"), "must be an absolute path like /api/x/{id}")
        token_param = route.get("token_param")
        if token_param is not None and (
            not isinstance(token_param, str)
            or not isinstance(rpath, str)
            or "{" + token_param + "}" not in rpath
        ):
            c.add("invalid_value", (*path, "token_param"), "must name a {parameter} of the path")
        handler = route.get("handler")
        if isinstance(handler, str) and handler not in handlers:
            hint = did_you_mean(handler, handlers)
            c.add("undeclared_handler", (*path, "handler"), f"{handler!r} is not in handlers{hint}")
        on = route.get("listener")
        if isinstance(on, str) and on != listener:
            c.add("undeclared_listener", (*path, "listener"), f"no listener named {on!r}")
        ident = (str(method), str(rpath), str(on))
        if ident in seen:
            c.add("duplicate", path, "the same method and path are declared twice")
        seen.add(ident)


def _check_events(c: _Checker, raw: dict[str, Any], scopes: set[str]) -> None:
    events = raw.get("events", {})
    if not c.typed(events, dict, ("events",), "an object"):
        return
    c.unknown_fields(events, ("events",), ("subscribe", "publish"))
    for direction in ("subscribe", "publish"):
        for i, event in enumerate(c.strings(events.get(direction, []), ("events", direction))):
            if not EVENT.fullmatch(event):
                c.add(
                    "invalid_name",
                    ("events", direction, i),
                    "event types look like 'camera.motion'",
                )
    if events.get("publish") and "events:publish" not in scopes:
        c.add(
            "scope_inconsistent",
            ("events", "publish"),
            "publishing events requires the scope events:publish",
        )


def _check_hooks(c: _Checker, raw: dict[str, Any]) -> None:
    hooks = raw.get("hooks", {})
    if not c.typed(hooks, dict, ("hooks",), "an object"):
        return
    for name, hook in hooks.items():
        if not EVENT.fullmatch(name):
            c.add("invalid_name", ("hooks", name), "hook names look like 'snapshot.annotate'")
        if not c.typed(hook, dict, ("hooks", name), "an object"):
            continue
        c.unknown_fields(hook, ("hooks", name), ("priority", "timeout_ms"))
        c.number(hook.get("priority", 0), ("hooks", name, "priority"), -1000, 1000, True)
        c.number(hook.get("timeout_ms", 1000), ("hooks", name, "timeout_ms"), 1, 60000, True)


def _check_dependencies(
    c: _Checker, raw: dict[str, Any], key: str, installed: Mapping[str, Installed] | None
) -> None:
    deps = raw.get("dependencies", {})
    if not c.typed(deps, dict, ("dependencies",), "an object of plugin key -> version range"):
        return
    for dep, spec in deps.items():
        path = ("dependencies", dep)
        if not KEY.fullmatch(dep):
            c.add("invalid_key", path, f"must match {KEY.pattern}")
            continue
        if dep == key:
            c.add("dependency_cycle", path, f"{key} cannot depend on itself")
            continue
        if not c.typed(spec, str, path, "a version range"):
            continue
        try:
            wanted = parse_range(spec)
        except VersionError as exc:
            c.add("invalid_range", path, str(exc))
            continue
        if installed is None:
            continue
        found = installed.get(dep)
        if found is None:
            c.add("dependency_missing", path, f"needs plugin {dep!r} {spec}: not installed")
        elif not _admits(wanted, found.version):
            c.add(
                "dependency_version",
                path,
                f"needs plugin {dep!r} {spec}: version {found.version} is installed",
            )
    graph = {k: list(v.dependencies) for k, v in (installed or {}).items()}
    cycle = _find_cycle(key, [d for d in deps if d != key], graph)
    if cycle:
        c.add("dependency_cycle", ("dependencies",), " -> ".join(cycle))


def _admits(wanted: VersionRange, version: str) -> bool:
    try:
        return wanted.admits(parse_version(version))
    except VersionError:
        return False


def _find_cycle(key: str, deps: list[str], installed: Mapping[str, list[str]]) -> list[str] | None:
    """A dependency path from `key` back to itself, if one exists."""
    graph = dict(installed)
    graph[key] = deps
    stack: list[tuple[str, list[str]]] = [(d, [key, d]) for d in deps]
    seen: set[str] = set()
    while stack:
        node, path = stack.pop()
        if node == key:
            return path
        if node in seen:
            continue
        seen.add(node)
        stack.extend((n, [*path, n]) for n in graph.get(node, []))
    return None


def _check_security(c: _Checker, raw: dict[str, Any]) -> list[str]:
    security = raw.get("security")
    if security is None or not c.typed(security, dict, ("security",), "an object"):
        return []
    c.unknown_fields(security, ("security",), ("authentication_required", "data_classification"))
    if security.get("authentication_required") is not True:
        c.add("authentication_required", ("security", "authentication_required"), "must be true")
    classes = c.strings(security.get("data_classification"), ("security", "data_classification"))
    if not classes:
        c.add(
            "no_classification",
            ("security", "data_classification"),
            f"declare at least one of {sorted(CLASSIFICATIONS)}",
        )
    for i, cls in enumerate(classes):
        if cls not in CLASSIFICATIONS:
            c.add(
                "invalid_value",
                ("security", "data_classification", i),
                f"must be one of {sorted(CLASSIFICATIONS)}",
            )
    return classes


def _check_compliance(c: _Checker, raw: dict[str, Any]) -> list[str]:
    compliance = raw.get("compliance", {})
    if not c.typed(compliance, dict, ("compliance",), "an object"):
        return []
    c.unknown_fields(compliance, ("compliance",), ("audit_level", "hipaa_controls"))
    level = compliance.get("audit_level", "basic")
    if not isinstance(level, str) or level not in AUDIT_LEVELS:
        c.add(
            "invalid_value", ("compliance", "audit_level"), f"must be one of {sorted(AUDIT_LEVELS)}"
        )
    controls = c.strings(compliance.get("hipaa_controls", []), ("compliance", "hipaa_controls"))
    for i, control in enumerate(controls):
        if not HIPAA.fullmatch(control):
            c.add(
                "invalid_value",
                ("compliance", "hipaa_controls", i),
                "HIPAA controls look like '164.312(a)' or '164.312(a)(1)'",
            )
    return controls


def _check_objects(c: _Checker, raw: dict[str, Any]) -> None:
    health = raw.get("health_check", {})
    if c.typed(health, dict, ("health_check",), "an object"):
        c.unknown_fields(health, ("health_check",), ("interval_s", "timeout_s"))
        c.number(health.get("interval_s", 10), ("health_check", "interval_s"), 0.1, 3600)
        c.number(health.get("timeout_s", 2), ("health_check", "timeout_s"), 0.01, 600)
    resources = raw.get("resources", {})
    if c.typed(resources, dict, ("resources",), "an object"):
        c.unknown_fields(resources, ("resources",), ("memory_limit", "cpu_limit", "max_processes"))
        c.number(resources.get("memory_limit", 256), ("resources", "memory_limit"), 64, 8192, True)
        c.number(resources.get("cpu_limit", 0.5), ("resources", "cpu_limit"), 0.1, 8.0)
        c.number(resources.get("max_processes", 64), ("resources", "max_processes"), 16, 4096, True)
    schema = raw.get("config_schema", {"type": "object"})
    if c.typed(schema, dict, ("config_schema",), "a JSON Schema object"):
        if schema.get("type", "object") != "object":
            c.add("invalid_value", ("config_schema", "type"), "the configuration must be an object")
        try:
            Draft202012Validator.check_schema(schema)
        except SchemaError as exc:
            c.add("invalid_schema", ("config_schema",), f"not a valid JSON Schema: {exc.message}")
    ui = raw.get("ui", {})
    if c.typed(ui, dict, ("ui",), "an object"):
        for name, value in ui.items():
            if name != "wizard":
                c.add(
                    "unknown_field", ("ui", name), "unknown field" + did_you_mean(name, ["wizard"])
                )
            elif c.typed(value, str, ("ui", name), "a path") and value != "ui/wizard.html":
                c.add("invalid_value", ("ui", name), "the wizard lives at ui/wizard.html")
