import ast
from pathlib import Path

import pentarun.sdk

ROOT = Path(__file__).resolve().parents[2]


def test_sdk_public_names_are_pinned():
    assert sorted(pentarun.sdk.__all__) == [
        "Context",
        "CoreClient",
        "Error",
        "Plugin",
        "PluginStore",
        "Response",
        "Stream",
    ]


def test_bundled_plugins_import_only_the_sdk():
    for worker in (ROOT / "plugins").glob("*/worker/*.py"):
        for node in ast.walk(ast.parse(worker.read_text())):
            if (
                isinstance(node, ast.ImportFrom)
                and node.module
                and node.module.startswith("pentarun")
            ):
                assert node.module == "pentarun.sdk", f"{worker}: imports {node.module}"
            if isinstance(node, ast.Import):
                for alias in node.names:
                    assert not alias.name.startswith("pentarun") or alias.name == "pentarun.sdk"
