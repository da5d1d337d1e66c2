"""Declared but not implemented: from the worker's hello, and statically from its source."""

import msgspec

from pentarun.packages.implementation import missing_from_hello, static_warnings
from pentarun.packages.manifest import Manifest

from .factory import WORKER, definition

MANIFEST = msgspec.convert(
    definition(
        handlers=["demo.echo", "demo.other"],
        hooks={"snapshot.annotate": {}},
        events={"subscribe": ["camera.motion"]},
    ),
    Manifest,
)


def test_everything_announced_is_nothing_missing():
    announced = ["demo.echo", "demo.other", "hook:snapshot.annotate"]
    assert missing_from_hello(MANIFEST, announced, [], ["camera.motion"]) == []
    assert (
        missing_from_hello(MANIFEST, announced[:2], ["snapshot.annotate"], ["camera.motion"]) == []
    )


def test_each_missing_declaration_is_named_in_manifest_order():
    assert missing_from_hello(MANIFEST, ["demo.echo", "extra"], [], []) == [
        "handler 'demo.other'",
        "hook 'snapshot.annotate'",
        "event subscription 'camera.motion'",
    ]


def test_static_check_finds_names_missing_from_the_source():
    source = WORKER.decode()  # registers only "demo.echo"
    warnings = static_warnings(MANIFEST, source)
    assert [w.code for w in warnings] == ["worker.not_implemented"] * 3
    assert "handler 'demo.other'" in warnings[0].message
    assert warnings[0].path == "worker/plugin_worker.py"
    complete = source + "\n@plugin.handler(\"demo.other\")\n@plugin.hook('snapshot.annotate')\n"
    complete += '@plugin.on_event("camera.motion")\n'
    assert static_warnings(MANIFEST, complete) == []


def test_a_name_inside_a_longer_string_does_not_count():
    manifest = msgspec.convert(definition(handlers=["demo.echo"]), Manifest)
    assert static_warnings(manifest, 'plugin.handler("demo.echo2")')
    assert not static_warnings(manifest, "plugin.handler('demo.echo')")
