"""confine.py applies Landlock for real (a child process of the test, outside bubblewrap)."""

import json
import socket
import subprocess
import sys

import pytest

from pentarun.sandbox import confine
from pentarun.sandbox.launcher import CONFINE, host_paths

pytestmark = pytest.mark.skipif(
    confine.abi() == 0, reason="this kernel offers no Landlock (the sandbox reports it)"
)

SCRIPT = """
import json, socket, sys
out = {"argv": sys.argv, "path0": sys.path[0], "name": __name__}
def attempt(name, action):
    try:
        action()
        out[name] = "ok"
    except OSError as exc:
        out[name] = exc.strerror
attempt("read_secret", lambda: open(sys.argv[1]).read())
attempt("write_read_only", lambda: open(sys.argv[2], "w").close())
attempt("write_writable", lambda: open(sys.argv[3], "w").close())
attempt("tcp_other", lambda: socket.create_connection(("127.0.0.1", int(sys.argv[4])), 2))
attempt("tcp_allowed", lambda: socket.create_connection(("127.0.0.1", int(sys.argv[5])), 2))
print(json.dumps(out))
"""


def test_a_confined_script_reaches_only_what_its_rules_name(tmp_path):
    code, work, secret = tmp_path / "code", tmp_path / "work", tmp_path / "secret"
    for d in (code, work, secret):
        d.mkdir()
    (secret / "token").write_text("s3cret")
    (code / "main.py").write_text(SCRIPT)
    listeners = [socket.create_server(("127.0.0.1", 0)) for _ in range(2)]
    other, allowed = (s.getsockname()[1] for s in listeners)
    host = host_paths(root=False, uid_base=100_000)
    rules = {
        "read": [*host.system, *host.python, str(code), "/proc"],
        "write": [str(work)],
        "devices": ["/dev"],
        "ports": [allowed],
    }
    args = [str(secret / "token"), str(code / "new"), str(work / "new"), str(other), str(allowed)]
    done = subprocess.run(
        [sys.executable, "-I", "-S", CONFINE, json.dumps(rules), str(code / "main.py"), *args],
        capture_output=True,
        timeout=30,
        check=False,
    )
    for s in listeners:
        s.close()
    assert done.returncode == 0, done.stderr.decode()
    out = json.loads(done.stdout)
    assert out["name"] == "__main__" and out["path0"] == str(code)  # as `python main.py` would
    assert out["argv"] == [str(code / "main.py"), *args]
    assert out["read_secret"] == "Permission denied"
    assert out["write_read_only"] == "Permission denied"
    assert out["write_writable"] == "ok"
    assert out["tcp_other"] == "Permission denied" and out["tcp_allowed"] == "ok"


def test_where_landlock_cannot_be_applied_nothing_runs(tmp_path):
    (tmp_path / "main.py").write_text("print('ran')")
    rules = {"read": ["/nonexistent-but-fine"], "write": [], "devices": [], "ports": [70000]}
    done = subprocess.run(
        [sys.executable, "-I", "-S", CONFINE, json.dumps(rules), str(tmp_path / "main.py")],
        capture_output=True,
        timeout=30,
        check=False,
    )
    assert done.returncode == confine.EXIT_UNCONFINED and b"ran" not in done.stdout
    assert b"Landlock could not be applied" in done.stderr


def test_handled_rights_grow_with_the_abi():
    assert confine.handled_fs(1) == (1 << 13) - 1
    assert confine.handled_fs(3) & confine.TRUNCATE and not confine.handled_fs(2) & confine.TRUNCATE
    assert confine.handled_fs(5) & confine.IOCTL_DEV


def test_nothing_of_the_plugins_runs_before_landlock(tmp_path):
    # a requirement in site/ (on PYTHONPATH) that ships sitecustomize.py: it runs, but confined
    site, work, secret = tmp_path / "site", tmp_path / "work", tmp_path / "secret"
    code = tmp_path / "code"
    for d in (site, work, secret, code):
        d.mkdir()
    (secret / "token").write_text("s3cret")
    (site / "sitecustomize.py").write_text(
        "import pathlib\n"
        "try:\n"
        f"    seen = pathlib.Path({str(secret / 'token')!r}).read_text()\n"
        "except OSError as exc:\n"
        "    seen = exc.strerror\n"
        f"pathlib.Path({str(work / 'seen')!r}).write_text(seen)\n"
    )
    (code / "main.py").write_text("import sys; print(sys.path[0], sys.path[1])")
    host = host_paths(root=False, uid_base=100_000)
    rules = {
        "read": [*host.system, *host.python, str(site), str(code), "/proc"],
        "write": [str(work)],
        "devices": ["/dev"],
        "ports": [],
    }
    done = subprocess.run(
        [sys.executable, "-I", "-S", CONFINE, json.dumps(rules), str(code / "main.py")],
        env={"PYTHONPATH": str(site), "PATH": "/usr/bin:/bin"},
        capture_output=True,
        timeout=30,
        check=False,
        text=True,
    )
    assert done.returncode == 0, done.stderr
    assert (work / "seen").read_text() == "Permission denied"  # it ran after Landlock
    assert done.stdout.split() == [str(code), str(site)]  # the script's dir, then PYTHONPATH
