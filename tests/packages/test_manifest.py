"""One test per manifest rule of SPEC §2, each asserting its code and field path."""

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pentarun.packages.manifest import (
    Installed,
    Manifest,
    public_hostname_problem,
    validate_manifest,
)

from .factory import definition

F = "definition.json:"


def problems(raw, identity=("demo", "1.0.0"), installed=None):
    manifest, found = validate_manifest(
        raw, identity=identity, engine_version="0.1.0", installed=installed
    )
    assert (manifest is None) == bool(found)
    return {(p.code, p.path) for p in found}


def test_the_reference_definition_is_valid():
    assert problems(definition()) == set()


CASES = [
    ("not an object", [], "manifest.wrong_type", "definition.json"),
    ("missing key", definition(key=None), "manifest.missing_field", F + "key"),
    ("missing traits", definition(traits=None), "manifest.missing_field", F + "traits"),
    ("missing security", definition(security=None), "manifest.missing_field", F + "security"),
    ("bad key", definition(key="Demo!"), "manifest.invalid_key", F + "key"),
    ("key ending in a newline", definition(key="demo\n"), "manifest.invalid_key", F + "key"),
    ("key differs from plugin.id", definition(key="other"), "manifest.identity_mismatch", F + "key"),
    ("bad version", definition(version="1.0"), "manifest.invalid_version", F + "version"),
    ("version differs", definition(version="1.0.1"), "manifest.identity_mismatch", F + "version"),
    ("engine excludes us", definition(engine=">=2"), "manifest.engine_incompatible", F + "engine"),
    ("engine unparseable", definition(engine="newest"), "manifest.invalid_range", F + "engine"),
    ("unknown field", definition(colour="blue"), "manifest.unknown_field", F + "colour"),
    ("wrong type", definition(name=5), "manifest.wrong_type", F + "name"),
    ("bool is not int", definition(resources={"memory_limit": True}), "manifest.wrong_type", F + "resources.memory_limit"),
    ("no traits", definition(traits=[]), "manifest.no_traits", F + "traits"),
    ("reserved trait", definition(traits=["example", "root"]), "manifest.reserved_trait", F + "traits[1]"),
    ("duplicate trait", definition(traits=["a", "a"]), "manifest.duplicate", F + "traits"),
    ("auth not required", definition(security={"authentication_required": False, "data_classification": ["internal"]}), "manifest.authentication_required", F + "security.authentication_required"),
    ("no classification", definition(security={"authentication_required": True, "data_classification": []}), "manifest.no_classification", F + "security.data_classification"),
    ("unknown classification", definition(security={"authentication_required": True, "data_classification": ["secret"]}), "manifest.invalid_value", F + "security.data_classification[0]"),
    ("phi without phi class", definition(traits=["handles_phi"], compliance={"hipaa_controls": ["164.312(a)"]}), "manifest.trait_inconsistent", F + "security.data_classification"),
    ("phi without controls", definition(traits=["handles_phi"], security={"authentication_required": True, "data_classification": ["phi"]}), "manifest.trait_inconsistent", F + "compliance.hipaa_controls"),
    ("malformed control", definition(compliance={"hipaa_controls": ["HIPAA-1"]}), "manifest.invalid_value", F + "compliance.hipaa_controls[0]"),
    ("pii without pii class", definition(traits=["handles_pii"]), "manifest.trait_inconsistent", F + "security.data_classification"),
    ("external without domains", definition(traits=["external_service"]), "manifest.trait_inconsistent", F + "allowed_domains"),
    ("egress without domains", definition(scopes=["proxy:egress"]), "manifest.scope_inconsistent", F + "allowed_domains"),
    ("localhost domain", definition(allowed_domains=["localhost"]), "manifest.invalid_domain", F + "allowed_domains[0]"),
    ("ip literal", definition(allowed_domains=["93.184.216.34"]), "manifest.invalid_domain", F + "allowed_domains[0]"),
    ("private ip", definition(allowed_domains=["10.0.0.1"]), "manifest.invalid_domain", F + "allowed_domains[0]"),
    ("ipv6 literal", definition(allowed_domains=["[::1]"]), "manifest.invalid_domain", F + "allowed_domains[0]"),
    ("internal suffix", definition(allowed_domains=["nvr.local"]), "manifest.invalid_domain", F + "allowed_domains[0]"),
    ("single label", definition(allowed_domains=["intranet"]), "manifest.invalid_domain", F + "allowed_domains[0]"),
    ("bad hostname", definition(allowed_domains=["exa mple.com"]), "manifest.invalid_domain", F + "allowed_domains[0]"),
    ("memory too low", definition(resources={"memory_limit": 32}), "manifest.out_of_range", F + "resources.memory_limit"),
    ("memory too high", definition(resources={"memory_limit": 9000}), "manifest.out_of_range", F + "resources.memory_limit"),
    ("cpu too low", definition(resources={"cpu_limit": 0.05}), "manifest.out_of_range", F + "resources.cpu_limit"),
    ("cpu too high", definition(resources={"cpu_limit": 9}), "manifest.out_of_range", F + "resources.cpu_limit"),
    ("audit level", definition(compliance={"audit_level": "paranoid"}), "manifest.invalid_value", F + "compliance.audit_level"),
    ("unknown scope", definition(scopes=["cameras:delete"]), "manifest.unknown_scope", F + "scopes[0]"),
    ("bad handler name", definition(handlers=["Bad Handler"]), "manifest.invalid_name", F + "handlers[0]"),
    ("handler ending in a newline", definition(handlers=["demo.echo\n"]), "manifest.invalid_name", F + "handlers[0]"),
    ("trait ending in a newline", definition(traits=["example\n"]), "manifest.invalid_name", F + "traits[0]"),
    ("contract ending in a newline", definition(contracts=["IntegrationPlugin\n"]), "manifest.invalid_name", F + "contracts[0]"),
    ("event ending in a newline", definition(events={"subscribe": ["camera.motion\n"]}), "manifest.invalid_name", F + "events.subscribe[0]"),
    ("domain label ending in a newline", definition(allowed_domains=["example.com\n"]), "manifest.invalid_domain", F + "allowed_domains[0]"),
    ("control ending in a newline", definition(compliance={"hipaa_controls": ["164.312(a)\n"]}), "manifest.invalid_value", F + "compliance.hipaa_controls[0]"),
    ("dependency ending in a newline", definition(dependencies={"other\n": ">=1"}), "manifest.invalid_key", F + "dependencies.other\n"),
    ("route to undeclared handler", definition(listener={"name": "ha", "port": 8129}, routes=[{"method": "GET", "path": "/x", "handler": "nope", "listener": "ha"}]), "manifest.undeclared_handler", F + "routes[0].handler"),
    ("route to undeclared listener", definition(routes=[{"method": "GET", "path": "/x", "handler": "demo.echo", "listener": "ha"}]), "manifest.undeclared_listener", F + "routes[0].listener"),
    ("route method", definition(listener={"name": "ha", "port": 8129}, routes=[{"method": "FETCH", "path": "/x", "handler": "demo.echo", "listener": "ha"}]), "manifest.invalid_value", F + "routes[0].method"),
    ("route path", definition(listener={"name": "ha", "port": 8129}, routes=[{"method": "GET", "path": "x/../y", "handler": "demo.echo", "listener": "ha"}]), "manifest.invalid_value", F + "routes[0].path"),
    ("route missing field", definition(listener={"name": "ha", "port": 8129}, routes=[{"method": "GET", "handler": "demo.echo", "listener": "ha"}]), "manifest.missing_field", F + "routes[0].path"),
    ("listener port", definition(listener={"name": "ha", "port": 70000}), "manifest.out_of_range", F + "listener.port"),
    ("listener auth", definition(listener={"name": "ha", "port": 8129, "auth": "none"}), "manifest.invalid_value", F + "listener.auth"),
    ("rate limit", definition(listener={"name": "ha", "port": 8129, "rate_limit": {"requests": 0}}), "manifest.out_of_range", F + "listener.rate_limit.requests"),
    ("event name", definition(events={"subscribe": ["motion"]}), "manifest.invalid_name", F + "events.subscribe[0]"),
    ("publish without scope", definition(events={"publish": ["camera.motion"]}), "manifest.scope_inconsistent", F + "events.publish"),
    ("hook timeout", definition(hooks={"snapshot.annotate": {"timeout_ms": 0}}), "manifest.out_of_range", F + "hooks.snapshot.annotate.timeout_ms"),
    ("hook name", definition(hooks={"annotate": {}}), "manifest.invalid_name", F + "hooks.annotate"),
    ("dependency key", definition(dependencies={"Other": ">=1"}), "manifest.invalid_key", F + "dependencies.Other"),
    ("dependency range", definition(dependencies={"other": "latest"}), "manifest.invalid_range", F + "dependencies.other"),
    ("self dependency", definition(dependencies={"demo": ">=1"}), "manifest.dependency_cycle", F + "dependencies.demo"),
    ("health interval", definition(health_check={"interval_s": 0}), "manifest.out_of_range", F + "health_check.interval_s"),
    ("config schema type", definition(config_schema={"type": "array"}), "manifest.invalid_value", F + "config_schema.type"),
    ("config schema invalid", definition(config_schema={"type": "object", "properties": {"x": {"type": "colour"}}}), "manifest.invalid_schema", F + "config_schema"),
    ("wizard path", definition(ui={"wizard": "../x.html"}), "manifest.invalid_value", F + "ui.wizard"),
    ("idempotent undeclared", definition(idempotent=["demo.nope"]), "manifest.undeclared_handler", F + "idempotent[0]"),
    ("idempotent wrong type", definition(idempotent="demo.echo"), "manifest.wrong_type", F + "idempotent"),
]  # fmt: skip


@pytest.mark.parametrize(("name", "raw", "code", "path"), CASES, ids=[c[0] for c in CASES])
def test_rule(name, raw, code, path):
    assert (code, path) in problems(raw)


def messages(raw):
    _, found = validate_manifest(raw, identity=("demo", "1.0.0"), engine_version="0.1.0")
    return {p.path: p.message for p in found}


def test_misspellings_get_a_suggestion():
    found = messages(
        definition(
            scopes=["camera:read", "properties:read", "zzz:qqq"],
            handler=["demo.echo"],
            security={"authentication_required": True, "data_clasification": ["internal"]},
            idempotent=["demo.ech"],
        )
    )
    assert found[F + "scopes[0]"] == "unknown scope 'camera:read' (did you mean 'cameras:read'?)"
    assert found[F + "scopes[2]"] == "unknown scope 'zzz:qqq'"  # nothing close: no guess
    assert found[F + "handler"] == "unknown field (did you mean 'handlers'?)"
    assert "did you mean 'data_classification'?" in found[F + "security.data_clasification"]
    assert found[F + "idempotent[0]"] == "'demo.ech' is not in handlers (did you mean 'demo.echo'?)"


def test_idempotent_handlers_and_get_routes_may_be_retried():
    raw = definition(
        handlers=["demo.echo", "demo.list", "demo.change"],
        idempotent=["demo.echo"],
        listener={"name": "demo", "port": 8200},
        routes=[
            {"method": "GET", "path": "/list", "handler": "demo.list", "listener": "demo"},
            {"method": "POST", "path": "/change", "handler": "demo.change", "listener": "demo"},
        ],
    )
    manifest, found = validate_manifest(raw, engine_version="0.1.0")
    assert found == [] and isinstance(manifest, Manifest)
    assert manifest.idempotent == ["demo.echo"]
    assert manifest.is_idempotent("demo.echo") and manifest.is_idempotent("demo.echo", "POST")
    assert manifest.is_idempotent("demo.list", "GET")
    assert not manifest.is_idempotent("demo.list")  # an admin call names no method
    assert not manifest.is_idempotent("demo.change", "POST")
    assert not manifest.is_idempotent("demo.change", "GET")  # no GET route serves it


def test_cycles_through_installed_plugins_are_rejected():
    installed = {
        "bee": Installed("1.0.0", {"cee": ">=1"}),
        "cee": Installed("1.0.0", {"demo": ">=1"}),
    }
    found = problems(definition(dependencies={"bee": ">=1"}), installed=installed)
    assert ("manifest.dependency_cycle", F + "dependencies") in found
    alone = {"bee": Installed("1.0.0")}
    assert problems(definition(dependencies={"bee": ">=1"}), installed=alone) == set()
    assert ("manifest.dependency_cycle", F + "dependencies.demo") in problems(
        definition(dependencies={"demo": ">=1"}), installed={}
    )


def test_dependencies_resolve_against_what_is_installed():
    installed = {"bee": Installed("1.4.0"), "cee": Installed("2.0.0")}
    deps = {"bee": ">=1.2,<2", "cee": ">=1,<2", "dee": ">=1"}
    raw = definition(dependencies=deps)
    found = problems(raw, installed=installed)
    assert ("manifest.dependency_version", F + "dependencies.cee") in found
    assert ("manifest.dependency_missing", F + "dependencies.dee") in found
    assert not any(path == F + "dependencies.bee" for _, path in found)
    _, listed = validate_manifest(raw, engine_version="0.1.0", installed=installed)
    (version,) = [p for p in listed if p.code == "manifest.dependency_version"]
    assert "'cee' >=1,<2" in version.message and "2.0.0 is installed" in version.message
    assert problems(raw, installed=None) == set()  # authoring: only the ranges are checked


def test_the_spec_example_is_valid():
    example = definition(
        traits=["external_service"],
        scopes=["properties:read", "cameras:read", "streams:read"],
        handlers=["ha.info", "ha.cameras.list"],
        allowed_domains=["example.com"],
        listener={
            "name": "homeassistant",
            "port": 8129,
            "auth": "property_key",
            "rate_limit": {"requests": 60, "window_s": 60},
        },
        routes=[
            {
                "method": "GET",
                "path": "/api/ha/v1/cameras",
                "handler": "ha.cameras.list",
                "listener": "homeassistant",
            }
        ],
        events={"subscribe": ["camera.motion"], "publish": []},
        hooks={"snapshot.annotate": {"priority": 100, "timeout_ms": 500}},
        dependencies={"other-plugin": ">=1.2,<2"},
        health_check={"interval_s": 10, "timeout_s": 2},
        config_schema={"type": "object", "properties": {}},
    )
    assert problems(example) == set()


@pytest.mark.parametrize("host", ["example.com", "api.example.co.uk", "xn--bcher-kva.example"])
def test_public_hostnames_pass(host):
    assert public_hostname_problem(host) is None


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=10),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner, max_size=5)
    ),
    max_leaves=20,
)
field_names = st.sampled_from(
    [
        *sorted(definition()),
        "listener",
        "routes",
        "events",
        "hooks",
        "dependencies",
        "allowed_domains",
        "ui",
        "health_check",
        "config_schema",
    ]
)


@settings(max_examples=400)
@given(st.dictionaries(field_names, json_values, max_size=12) | json_values)
def test_arbitrary_manifests_never_crash_the_validator(raw):
    manifest, found = validate_manifest(raw, engine_version="0.1.0")
    assert (manifest is None) == bool(found)


@settings(max_examples=300)
@given(st.sampled_from(sorted(definition())), json_values)
def test_one_field_replaced_by_anything_never_crashes(name, value):
    raw = definition()
    raw[name] = value
    manifest, found = validate_manifest(raw, engine_version="0.1.0")
    assert (manifest is None) == bool(found)
