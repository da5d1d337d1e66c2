"""Running a plugin from its source tree: the real validator, every problem reported."""

import json

import pytest

from pentarun.errors import BadRequest
from pentarun.registry import read_source_definition

from .packages.factory import definition, source


def write_tree(root, files):
    for name, data in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_bytes(data)
    return root


def test_a_valid_tree_gives_its_typed_manifest(tmp_path):
    root, manifest = read_source_definition(write_tree(tmp_path / "src", source()))
    assert root == (tmp_path / "src").resolve()
    assert (manifest.key, manifest.handlers) == ("demo", ["demo.echo"])


def test_a_source_tree_is_validated_with_every_problem(tmp_path):
    tree = tmp_path / "src"
    tree.mkdir()
    (tree / "definition.json").write_text(
        json.dumps(definition(traits=["root"], scopes=["camera:read"], engine=None))
    )
    with pytest.raises(BadRequest) as refused:
        read_source_definition(tree)
    codes = {(p["code"], p["path"]) for p in refused.value.details["problems"]}
    assert codes == {
        ("manifest.reserved_trait", "definition.json:traits[0]"),
        ("manifest.unknown_scope", "definition.json:scopes[0]"),
        ("manifest.missing_field", "definition.json:engine"),
        ("package.missing_file", "worker/plugin_worker.py"),
    }
    assert "did you mean 'cameras:read'" in str(refused.value)


def test_unreadable_json_is_one_clear_problem(tmp_path):
    tree = tmp_path / "src"
    tree.mkdir()
    (tree / "definition.json").write_bytes(b"\xff{")
    with pytest.raises(BadRequest, match="cannot read"):
        read_source_definition(tree)
