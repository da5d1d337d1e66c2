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


def _imported_modules(path: Path) -> set[str]:
    """Absolute names of the modules a pentarun source file imports (relative ones resolved)."""
    package = ".".join(path.relative_to(ROOT).with_suffix("").parts[:-1])
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = package.split(".")[: len(package.split(".")) - node.level + 1]
            prefix = ".".join(base) if node.level else ""
            module = ".".join(p for p in (prefix, node.module or "") if p)
            names.update(f"{module}.{alias.name}" for alias in node.names)
    return names


def test_the_core_imports_nothing_from_the_worker_sdk():
    """Constants both sides need (the worker's environment, the messages) live in ipc/."""
    for path in (ROOT / "pentarun").rglob("*.py"):
        if "sdk" in path.relative_to(ROOT / "pentarun").parts:
            continue
        sdk = {m for m in _imported_modules(path) if m.startswith("pentarun.sdk")}
        assert not sdk, f"{path.relative_to(ROOT)} imports {sorted(sdk)}"


def test_relative_imports_are_resolved():
    names = _imported_modules(ROOT / "pentarun" / "sdk" / "plugin.py")
    assert "pentarun.ipc.env.IPC_FD_ENV" in names
    assert "pentarun.ipc.messages.Log" in names
