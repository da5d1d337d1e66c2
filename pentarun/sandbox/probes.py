"""Escape probes, run by the security gate inside a plugin's own staged sandbox.

    python probes.py '{"secrets": [...], "writable": [...], "own": "...", "server_pid": 1,
                       "port": 8128, "max_processes": 64, "landlock": true}'

prints one JSON list of {"probe", "escaped", "detail"}. Standard library only: it runs in the
sandbox with the plugin's tree, limits and seccomp filter, before any of the plugin's code has
run. "escaped" means the probe reached what the sandbox must keep from a plugin.
"""

from __future__ import annotations

import ctypes
import errno
import functools
import json
import os
import socket
import subprocess
import sys
from collections.abc import Callable
from typing import Any

Result = tuple[bool, str]
CLONE_NEWUSER = 0x10000000


def _read(path: str) -> Result:
    try:
        with open(path, "rb") as handle:
            return True, f"read {len(handle.read(64))} bytes of {path}"
    except OSError as exc:
        return False, f"{path}: {exc.strerror}"


def _write(path: str) -> Result:
    try:
        with open(path, "ab"):
            return True, f"opened {path} for writing"
    except OSError as exc:
        return False, f"{path}: {exc.strerror}"


def _signal(pid: int) -> Result:
    try:
        os.kill(pid, 0)
    except OSError as exc:
        return False, f"pid {pid}: {exc.strerror}"
    return True, f"may signal pid {pid}"


def _connect(port: int) -> Result:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=2):
            return True, f"connected to the host's port {port}"
    except OSError as exc:
        return False, f"port {port}: {exc.strerror or exc}"


def _loopback_tcp() -> Result:
    """With Landlock in force, TCP on the sandbox's own loopback is refused (EACCES) on every
    port but the egress relay's, before the network stack answers."""
    try:
        with socket.create_connection(("127.0.0.1", 9), timeout=2):
            return True, "connected to port 9 of the sandbox's loopback"
    except OSError as exc:
        return exc.errno != errno.EACCES, f"port 9: {exc.strerror or exc}"


def _syscall(name: str, *args: int) -> Result:
    libc = ctypes.CDLL(None, use_errno=True)
    result = getattr(libc, name)(*args)
    code = ctypes.get_errno()
    return result == 0, f"{name} -> {result} ({errno.errorcode.get(code, code)})"


def _processes(limit: int) -> Result:
    started, refused = [], 0
    for _ in range(limit + 8):
        try:
            started.append(subprocess.Popen(["/bin/sleep", "30"]))
        except OSError:
            refused += 1
    for child in started:
        child.kill()
        child.wait()
    return refused == 0, f"{len(started)} started, {refused} refused (limit {limit})"


def _limits() -> Result:
    import resource  # noqa: PLC0415

    core = resource.getrlimit(resource.RLIMIT_CORE)
    with open("/proc/self/status") as handle:
        no_new_privs = "NoNewPrivs:\t1" in handle.read()
    ok = core == (0, 0) and no_new_privs and os.geteuid() != 0
    return not ok, f"uid {os.geteuid()}, core dumps {core}, no_new_privs {no_new_privs}"


def probes(args: dict[str, Any]) -> list[tuple[str, Callable[[], Result]]]:
    found: list[tuple[str, Callable[[], Result]]] = []
    for path in args["secrets"]:
        found.append((f"read {path}", functools.partial(_read, str(path))))
    for path in [*args["writable"], args["own"]]:
        found.append((f"write {path}", functools.partial(_write, str(path))))
    pid = int(args["server_pid"])
    found += [
        ("signal the server", lambda: _signal(pid)),
        ("read the server's environment", lambda: _read(f"/proc/{pid}/environ")),
        ("connect to the host", lambda: _connect(int(args["port"]))),
        ("a network interface", _interfaces),
        ("a new user namespace", lambda: _syscall("unshare", CLONE_NEWUSER)),
        ("mount", lambda: _syscall("mount", 0, 0, 0, 0, 0)),
        ("ptrace", lambda: _syscall("ptrace", 0, 0, 0, 0)),
        ("privileges", _limits),
        ("processes over the limit", lambda: _processes(int(args["max_processes"]))),
    ]
    if args.get("landlock"):
        found.append(("TCP past Landlock", _loopback_tcp))
    return found


def _interfaces() -> Result:
    names = [name for _, name in socket.if_nameindex()]
    return names != ["lo"], f"interfaces: {', '.join(names)}"


def main() -> None:
    args = json.loads(sys.argv[1])
    results = []
    for name, probe in probes(args):
        try:
            escaped, detail = probe()
        except Exception as exc:  # a probe that breaks did not get through
            escaped, detail = False, f"{type(exc).__name__}: {exc}"
        results.append({"probe": name, "escaped": escaped, "detail": detail})
    print(json.dumps(results))


if __name__ == "__main__":
    main()
