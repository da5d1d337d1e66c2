"""The plugin author's commands, run in-process as a user would type them."""

import json
import stat
import subprocess
from pathlib import Path

from pentarun.cli import _parser, main


def test_new_validate_pack_sign_test(tmp_path, capsys):
    assert main(["plugin", "new", "my-cam", "--dir", str(tmp_path)]) == 0
    source = tmp_path / "my-cam"
    assert main(["plugin", "validate", str(source)]) == 0
    assert main(["plugin", "pack", str(source), "--out", str(tmp_path), "--publisher", "acme"]) == 0
    package = tmp_path / "my-cam-0.1.0.zip"
    first = package.read_bytes()
    assert main(["plugin", "pack", str(source), "--out", str(tmp_path), "--publisher", "acme"]) == 0
    assert package.read_bytes() == first  # deterministic
    keys = tmp_path / "keys"
    assert main(["keys", "generate", "--out", str(keys), "--key-id", "acme"]) == 0
    assert stat.S_IMODE((keys / "acme.key").stat().st_mode) == 0o600
    assert main(["plugin", "sign", str(package), "--key", str(keys / "acme.key")]) == 0
    trust = tmp_path / "trust"
    trust.mkdir()
    (trust / "acme.pub").write_bytes((keys / "acme.pub").read_bytes())
    assert main(["plugin", "validate", str(package), "--trust", str(trust)]) == 0
    assert main(["plugin", "validate", str(package)]) == 1  # signed by a key nobody trusts
    capsys.readouterr()
    assert main(["plugin", "test", str(package), "--trust", str(trust)]) == 0
    out = capsys.readouterr()
    assert "all gates passed" in out.out
    assert "recovery: passed" in out.err  # progress


def test_validate_lists_every_problem_and_test_fails_on_a_gate(tmp_path, capsys):
    main(["plugin", "new", "broken", "--dir", str(tmp_path)])
    root = tmp_path / "broken"
    definition = json.loads((root / "definition.json").read_text())
    definition["traits"] = ["root"]
    definition["resources"]["cpu_limit"] = 99
    (root / "definition.json").write_text(json.dumps(definition))
    assert main(["plugin", "validate", str(root)]) == 1
    err = capsys.readouterr().err
    assert "manifest.reserved_trait" in err and "definition.json:traits[0]" in err
    assert "manifest.out_of_range" in err and "resources.cpu_limit" in err

    main(["plugin", "new", "failing", "--dir", str(tmp_path)])
    plan_path = tmp_path / "failing" / "tests" / "test_plan.json"
    plan = json.loads(plan_path.read_text())
    plan["cases"][0]["expect"] = {"ok": False}
    plan_path.write_text(json.dumps(plan))
    capsys.readouterr()
    assert main(["plugin", "test", str(tmp_path / "failing")]) == 1
    assert "FAIL  integration" in capsys.readouterr().out


def test_usage_errors_exit_2(tmp_path, capsys):
    assert main(["plugin", "new", "Bad Name", "--dir", str(tmp_path)]) == 2
    assert main(["plugin", "validate", str(tmp_path / "nothing")]) == 2
    main(["plugin", "new", "twice", "--dir", str(tmp_path)])
    assert main(["plugin", "new", "twice", "--dir", str(tmp_path)]) == 2
    assert "already exists" in capsys.readouterr().err


def test_log_level_is_accepted_before_and_after_the_command():
    assert _parser().parse_args(["serve", "--log-level", "DEBUG"]).log_level == "DEBUG"
    assert _parser().parse_args(["--log-level", "DEBUG", "serve"]).log_level == "DEBUG"
    assert _parser().parse_args(["serve"]).log_level == "INFO"


def test_problems_exit_1_in_every_command_that_checks(tmp_path, capsys):
    main(["plugin", "new", "reserved", "--dir", str(tmp_path)])
    root = tmp_path / "reserved"
    definition = json.loads((root / "definition.json").read_text())
    definition["traits"] = ["root"]
    (root / "definition.json").write_text(json.dumps(definition))
    capsys.readouterr()
    assert main(["plugin", "test", str(root)]) == 1  # was 2 before: README says 1
    assert "manifest.reserved_trait" in capsys.readouterr().err
    assert main(["plugin", "pack", str(root), "--out", str(tmp_path)]) == 1
    assert main(["plugin", "validate", str(root)]) == 1


def test_validate_warns_about_a_declared_handler_missing_from_the_worker(tmp_path, capsys):
    main(["plugin", "new", "half", "--dir", str(tmp_path)])
    root = tmp_path / "half"
    definition = json.loads((root / "definition.json").read_text())
    definition["handlers"].append("half.bye")
    (root / "definition.json").write_text(json.dumps(definition))
    capsys.readouterr()
    assert main(["plugin", "validate", str(root)]) == 0  # a warning, not a problem
    err = capsys.readouterr().err
    assert "1 warning(s)" in err and "worker.not_implemented" in err and "'half.bye'" in err


def test_misspelt_scope_gets_a_suggestion(tmp_path, capsys):
    main(["plugin", "new", "typo", "--dir", str(tmp_path)])
    root = tmp_path / "typo"
    definition = json.loads((root / "definition.json").read_text())
    definition["scopes"] = ["camera:read"]
    (root / "definition.json").write_text(json.dumps(definition))
    capsys.readouterr()
    assert main(["plugin", "validate", str(root)]) == 1
    assert "did you mean 'cameras:read'?" in capsys.readouterr().err


def git_repo(path, ignore=""):
    path.mkdir()
    subprocess.run(["git", "init", "-q", str(path)], check=True)
    if ignore:
        (path / ".gitignore").write_text(ignore)
    return path


def test_keys_generate_writes_into_keys_and_never_unignored_into_a_work_tree(
    tmp_path, capsys, monkeypatch
):
    repo = git_repo(tmp_path / "repo")
    monkeypatch.chdir(repo)
    assert main(["keys", "generate", "--key-id", "acme"]) == 2
    assert "does not ignore it" in capsys.readouterr().err
    assert not (repo / "keys").exists()  # nothing written

    (repo / ".gitignore").write_text("keys/\n")
    assert main(["keys", "generate", "--key-id", "acme"]) == 0
    assert stat.S_IMODE((repo / "keys" / "acme.key").stat().st_mode) == 0o600
    assert (repo / "keys" / "acme.pub").is_file()

    ignored_by_suffix = git_repo(tmp_path / "other", ignore="*.key\n")
    out = ignored_by_suffix / "signing"
    assert main(["keys", "generate", "--key-id", "b", "--out", str(out)]) == 0
    outside = tmp_path / "plain"  # no work tree: nothing to commit it to
    assert main(["keys", "generate", "--key-id", "c", "--out", str(outside)]) == 0
    assert main(["keys", "generate", "--key-id", "../x", "--out", str(outside)]) == 2


def test_this_repository_ignores_generated_keys():
    repo = Path(__file__).resolve().parent.parent
    for name in ("keys/acme.key", "keys/acme.pub", "elsewhere/acme.key"):
        result = subprocess.run(
            ["git", "-C", str(repo), "check-ignore", "-q", "--no-index", name], check=False
        )
        assert result.returncode == 0, name
