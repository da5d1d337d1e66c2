from hypothesis import given
from hypothesis import strategies as st

from pentarun.sandbox.bwrap import SETPRIV, command, join_script
from pentarun.sandbox.profile import (
    DATA,
    UID_SPAN,
    Bind,
    Host,
    Limits,
    landlock_rules,
    plugin_uid,
    profile_for,
)

HOST = Host(
    system=("/usr", "/lib", "/etc/ssl"),
    python=("/opt/py", "/srv/app/.venv"),
    sdk="/srv/app/pentarun",
    root=True,
)
LIMITS = Limits(memory_mb=256, cpus=0.5, max_processes=64, open_files=1024, tmp_mb=64)
TREE = "/var/pentarun/plugins/cam/abc"


def profile(root: bool = True):
    host = HOST if root else Host(HOST.system, HOST.python, HOST.sdk, root=False)
    return profile_for("cam", TREE, "/var/pentarun/plugin-data/cam", host, LIMITS)


@given(st.from_regex(r"[a-z][a-z0-9-]{1,62}", fullmatch=True), st.integers(1000, 10**6))
def test_a_plugin_uid_is_stable_unprivileged_and_in_its_range(key, base):
    uid = plugin_uid(key, base)
    assert uid == plugin_uid(key, base) and base <= uid < base + UID_SPAN and uid != 0


def test_what_a_worker_sees_read_only_and_what_it_may_write():
    p = profile()
    writable = [b for b in p.binds if b.writable]
    assert writable == [Bind("/var/pentarun/plugin-data/cam", DATA, writable=True)]
    targets = {b.target for b in p.binds}
    assert {"/usr", "/opt/py", "/srv/app/pentarun", TREE} <= targets
    assert "/srv/app" not in targets and "/var/pentarun" not in targets  # not the server's dirs
    assert p.env["HOME"] == DATA and p.uid == plugin_uid("cam", HOST.uid_base)


def test_the_argv_joins_the_cgroup_first_and_confines_then_drops_to_the_plugin_uid():
    argv = command(profile(), ["python", "w.py"], seccomp_fd=7, cgroup_procs=["/cg/procs"])
    assert argv[:2] == ["/bin/sh", "-c"] and "echo $$ > /cg/procs" in argv[2]
    for flag in ("--unshare-pid", "--unshare-net", "--unshare-ipc", "--unshare-uts"):
        assert flag in argv
    assert argv[argv.index("--seccomp") : argv.index("--seccomp") + 2] == ["--seccomp", "7"]
    assert "--new-session" in argv
    assert "--die-with-parent" not in argv  # its death signal follows the spawning thread
    rest = argv[argv.index("--") + 1 :]
    assert rest[0] == SETPRIV and "--no-new-privs" in rest and rest[-2:] == ["python", "w.py"]
    assert "--unshare-user" not in argv  # as root: its own host uid, not a user namespace
    # ancestors of every bind are created traversable before the bind
    first_bind = argv.index("--ro-bind")
    assert argv.index("/srv/app") < first_bind and argv[argv.index("/srv/app") - 1] == "--dir"


def test_without_root_a_user_namespace_and_no_capabilities():
    argv = command(profile(root=False), ["python"], seccomp_fd=None, cgroup_procs=[])
    assert "--unshare-user" in argv and "--disable-userns" in argv
    assert argv[argv.index("--cap-drop") : argv.index("--cap-drop") + 2] == ["--cap-drop", "ALL"]
    assert SETPRIV not in argv and "--seccomp" not in argv


def test_the_tmpfs_comes_before_binds_so_a_tree_under_tmp_stays_visible():
    argv = command(profile(), ["python"], seccomp_fd=None, cgroup_procs=[])
    assert argv.index("--tmpfs") < argv.index("--ro-bind")


def test_the_join_script_sets_limits_and_fails_closed():
    script = join_script(["/a b/procs"], 512)
    assert "'/a b/procs'" in script and "|| exit 97" in script
    assert "ulimit -n 512" in script and "ulimit -c 0" in script and 'exec "$@"' in script


def test_a_data_dir_that_every_worker_would_see_is_refused():
    import sys  # noqa: PLC0415
    from pathlib import Path  # noqa: PLC0415

    from pentarun.config import SecurityConfig  # noqa: PLC0415
    from pentarun.sandbox.launcher import Sandbox  # noqa: PLC0415

    inside = Path(sys.prefix) / "var"  # e.g. the server started from inside its venv
    status = Sandbox(SecurityConfig(), inside).check()
    assert not status.ok and "every worker sees" in status.reason
    assert not inside.exists()  # refused before anything was created


def test_landlock_gives_again_exactly_what_the_mounts_give():
    p = profile()
    rules = landlock_rules(p, (3128,))
    assert set(rules.write) == {"/tmp", DATA}  # nothing else writable
    assert set(rules.read) == {b.target for b in p.binds if not b.writable} | {"/proc"}
    assert rules.devices == ("/dev",) and rules.ports == (3128,)
    assert not set(rules.read) & set(rules.write)
