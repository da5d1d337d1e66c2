"""The plugin author's commands, run in-process as a user would type them."""

import json
import stat

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
