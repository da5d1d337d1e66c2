"""A SandboxProfile as a bubblewrap command line. Pure: unit-test the argv.

    command(profile, argv, seccomp_fd=..., cgroup_procs=[...]) -> [str]

The command is `/bin/sh -c <join>`, which writes its own pid into the worker's cgroups and
sets the file and core-dump limits *before* it execs bubblewrap, so every process of the
worker is counted and killed with the cgroup from the first instruction on. Bubblewrap then
builds the mount, pid, IPC, UTS, network and cgroup namespaces, binds what the profile names
(ancestors of every bind are created world-traversable: bubblewrap would make them 0700),
loads the seccomp filter and execs the worker — through `setpriv`, to the plugin's own uid
with no capabilities, when the server runs as root; in a user namespace otherwise.
"""

from __future__ import annotations

import shlex
from pathlib import PurePosixPath

from .profile import SANDBOX_UID, SandboxProfile

BWRAP = "bwrap"
SETPRIV = "/usr/bin/setpriv"
NAMESPACES = ("--unshare-ipc", "--unshare-pid", "--unshare-net", "--unshare-uts")


def _ancestors(path: str) -> list[str]:
    parents = list(PurePosixPath(path).parents)[:-1]  # without "/"
    return [str(p) for p in reversed(parents)]


def _dirs_for(targets: list[str]) -> list[str]:
    """`--perms 0755 --dir` for each ancestor of a bind target, once, outermost first."""
    made: set[str] = set()
    args: list[str] = []
    for target in targets:
        for ancestor in _ancestors(target):
            if ancestor not in made and ancestor not in targets:
                made.add(ancestor)
                args += ["--perms", "0755", "--dir", ancestor]
    return args


def join_script(cgroup_procs: list[str], open_files: int) -> str:
    """The shell that joins the cgroups and sets limits, then execs `"$@"`."""
    joins = "".join(f"echo $$ > {shlex.quote(p)} || exit 97; " for p in cgroup_procs)
    return f'{joins}ulimit -n {int(open_files)} && ulimit -c 0 || exit 98; exec "$@"'


def command(
    profile: SandboxProfile,
    argv: list[str],
    *,
    seccomp_fd: int | None,
    cgroup_procs: list[str],
    bwrap: str = BWRAP,
) -> list[str]:
    """The full command line that runs `argv` in `profile`'s sandbox."""
    limits = profile.limits
    args = ["/bin/sh", "-c", join_script(cgroup_procs, limits.open_files), "sh", bwrap]
    # /tmp first: a bind below it (a tree in a temporary dir) lands on the tmpfs, not under it
    args += ["--perms", "1777", "--size", str(limits.tmp_mb * 2**20), "--tmpfs", "/tmp"]
    args += ["--proc", "/proc", "--dev", "/dev"]
    args += _dirs_for([b.target for b in profile.binds])
    for bind in profile.binds:
        args += ["--bind" if bind.writable else "--ro-bind", bind.source, bind.target]
    # not --die-with-parent: its PR_SET_PDEATHSIG follows the thread that spawned bubblewrap
    # (one of trio's cached threads, retired after 10 s idle), so it killed healthy workers;
    # a worker dies with its cgroup instead (generation.py), and exits when its channel ends
    args += [*NAMESPACES, "--unshare-cgroup-try", "--new-session"]
    args += ["--cap-drop", "ALL"] if profile.uid is None else []
    if profile.uid is None:
        args += ["--unshare-user", "--uid", str(SANDBOX_UID), "--gid", str(SANDBOX_UID)]
        args += ["--disable-userns"]
    for name, value in sorted(profile.env.items()):
        args += ["--setenv", name, value]
    args += ["--chdir", profile.workdir]
    if seccomp_fd is not None:
        args += ["--seccomp", str(seccomp_fd)]
    args.append("--")
    if profile.uid is not None:
        uid = str(profile.uid)
        args += [SETPRIV, "--reuid", uid, "--regid", uid, "--clear-groups"]
        args += ["--inh-caps=-all", "--bounding-set=-all", "--no-new-privs", "--"]
    return args + argv
