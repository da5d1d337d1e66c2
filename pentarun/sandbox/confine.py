"""Landlock inside the sandbox: the last step before a plugin's code runs (SPEC §6).

    python -I -S confine.py '{"read": [...], "write": [...], "devices": [...], "ports": [3128]}' \
        SCRIPT [ARGS...]

restricts this process (and all it will start) to reading and executing beneath `read`,
reading and writing beneath `write`, reading and writing the device files beneath `devices`,
and binding or connecting TCP only on `ports`; where the kernel offers it, it may also signal
no process and reach no abstract Unix socket outside its own domain. Then it runs SCRIPT as
`__main__`, as `python SCRIPT ARGS` would. If Landlock is wanted (the launcher saw it on the
host) but cannot be applied, it exits 96 with the reason: nothing runs unconfined.

This is defence in depth behind bubblewrap's mounts and namespaces: a file the mounts let
through by mistake, a device node, a TCP port on the sandbox's loopback, a signal. Standard
library only (ctypes): the launcher imports `abi()` from here, and the sandbox runs this file
as a script before anything of the plugin's has run.
"""

from __future__ import annotations

import ctypes
import json
import os
import runpy
import stat
import sys

CREATE_RULESET, ADD_RULE, RESTRICT_SELF = 444, 445, 446  # the same on x86_64 and aarch64
CREATE_RULESET_VERSION = 1
RULE_PATH_BENEATH, RULE_NET_PORT = 1, 2
PR_SET_NO_NEW_PRIVS = 38
EXIT_UNCONFINED = 96

EXECUTE, WRITE_FILE, READ_FILE, READ_DIR = 1 << 0, 1 << 1, 1 << 2, 1 << 3
REMOVE_DIR, REMOVE_FILE, MAKE_CHAR, MAKE_DIR = 1 << 4, 1 << 5, 1 << 6, 1 << 7
MAKE_REG, MAKE_SOCK, MAKE_FIFO, MAKE_BLOCK = 1 << 8, 1 << 9, 1 << 10, 1 << 11
MAKE_SYM, REFER, TRUNCATE, IOCTL_DEV = 1 << 12, 1 << 13, 1 << 14, 1 << 15
BIND_TCP, CONNECT_TCP = 1 << 0, 1 << 1
NET_ABI = 4  # the first ABI with TCP rules
SCOPE_ABSTRACT_UNIX_SOCKET, SCOPE_SIGNAL = 1 << 0, 1 << 1

FILE_RIGHTS = EXECUTE | WRITE_FILE | READ_FILE | TRUNCATE | IOCTL_DEV  # all a file may get
READ = EXECUTE | READ_FILE | READ_DIR
WRITE = READ | WRITE_FILE | REMOVE_DIR | REMOVE_FILE | MAKE_DIR | MAKE_REG | MAKE_SOCK
WRITE |= MAKE_FIFO | MAKE_SYM | REFER | TRUNCATE
DEVICE = READ_FILE | WRITE_FILE | READ_DIR


class Unconfined(Exception):
    """Landlock could not be applied."""


def _libc() -> ctypes.CDLL:
    return ctypes.CDLL(None, use_errno=True)


def abi() -> int:
    """The kernel's Landlock ABI version; 0 where it has none (or it is disabled)."""
    libc = _libc()
    libc.syscall.restype = ctypes.c_long
    version = libc.syscall(CREATE_RULESET, None, ctypes.c_size_t(0), CREATE_RULESET_VERSION)
    return max(int(version), 0)


def handled_fs(version: int) -> int:
    """Every filesystem right the kernel of `version` can refuse."""
    rights = (1 << 13) - 1  # ABI 1: EXECUTE .. MAKE_SYM
    rights |= REFER if version >= 2 else 0
    rights |= TRUNCATE if version >= 3 else 0
    rights |= IOCTL_DEV if version >= 5 else 0
    return rights


class _RulesetAttr(ctypes.Structure):
    _fields_ = [
        ("handled_access_fs", ctypes.c_uint64),
        ("handled_access_net", ctypes.c_uint64),
        ("scoped", ctypes.c_uint64),
    ]


class _PathBeneath(ctypes.Structure):
    _pack_ = 1
    _fields_ = [("allowed_access", ctypes.c_uint64), ("parent_fd", ctypes.c_int32)]


class _NetPort(ctypes.Structure):
    _fields_ = [("allowed_access", ctypes.c_uint64), ("port", ctypes.c_uint64)]


def _call(libc: ctypes.CDLL, what: str, *args: object) -> int:
    result = int(libc.syscall(*args))
    if result < 0:
        err = ctypes.get_errno()
        raise Unconfined(f"{what}: {os.strerror(err)}")
    return result


def restrict(
    read: list[str], write: list[str], devices: list[str], ports: list[int], version: int
) -> None:
    """Apply Landlock of ABI `version` to this process for good."""
    libc = _libc()
    libc.syscall.restype = ctypes.c_long
    fs = handled_fs(version)
    attr = _RulesetAttr(fs, BIND_TCP | CONNECT_TCP if version >= 4 else 0, 0)
    if version >= 6:
        attr.scoped = SCOPE_ABSTRACT_UNIX_SOCKET | SCOPE_SIGNAL
    size = 24 if version >= 6 else 16 if version >= 4 else 8
    ruleset = _call(libc, "landlock_create_ruleset", CREATE_RULESET, ctypes.byref(attr), size, 0)
    try:
        for paths, rights in ((read, READ), (write, WRITE), (devices, DEVICE)):
            for path in paths:
                _allow_path(libc, ruleset, path, rights & fs)
        if version >= 4:
            for port in ports:
                rule = _NetPort(BIND_TCP | CONNECT_TCP, port)
                _call(
                    libc,
                    f"allow port {port}",
                    ADD_RULE,
                    ruleset,
                    RULE_NET_PORT,
                    ctypes.byref(rule),
                    0,
                )
        if libc.prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0:
            raise Unconfined(f"no_new_privs: {os.strerror(ctypes.get_errno())}")
        _call(libc, "landlock_restrict_self", RESTRICT_SELF, ruleset, 0)
    finally:
        os.close(ruleset)


def _allow_path(libc: ctypes.CDLL, ruleset: int, path: str, rights: int) -> None:
    try:
        fd = os.open(path, os.O_PATH | os.O_CLOEXEC)
    except FileNotFoundError:
        return  # not in this sandbox (e.g. /lib32 on a host without it): nothing to allow
    except OSError as exc:
        raise Unconfined(f"{path}: {exc.strerror}") from None
    try:
        if not stat.S_ISDIR(os.fstat(fd).st_mode):
            rights &= FILE_RIGHTS
        rule = _PathBeneath(rights, fd)
        _call(libc, f"allow {path}", ADD_RULE, ruleset, RULE_PATH_BENEATH, ctypes.byref(rule), 0)
    finally:
        os.close(fd)


def main(argv: list[str]) -> None:
    if len(argv) < 3:
        sys.exit(f"usage: {argv[0]} RULES SCRIPT [ARGS...]")
    rules = json.loads(argv[1])
    try:
        version = abi()
        if version < 1:
            raise Unconfined("the kernel offers no Landlock")
        restrict(rules["read"], rules["write"], rules["devices"], rules["ports"], version)
    except Unconfined as exc:
        print(f"pentarun sandbox: Landlock could not be applied: {exc}", file=sys.stderr)
        sys.exit(EXIT_UNCONFINED)
    script = argv[2]
    sys.argv = argv[2:]
    _restore_startup(os.path.dirname(os.path.abspath(script)))
    runpy.run_path(script, run_name="__main__")


def _restore_startup(script_dir: str) -> None:
    """What `python -I -S` left out, now that Landlock is on: the script's directory and
    PYTHONPATH first, then site-packages (.pth files, sitecustomize), and the environment's
    PYTHONDONTWRITEBYTECODE and PYTHONUNBUFFERED."""
    extra = [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]
    sys.path[0:0] = [script_dir, *extra]
    import site  # noqa: PLC0415 - only after Landlock: .pth files and sitecustomize run here

    site.main()
    if os.environ.get("PYTHONDONTWRITEBYTECODE"):
        sys.dont_write_bytecode = True
    if os.environ.get("PYTHONUNBUFFERED"):
        for stream in (sys.stdout, sys.stderr):
            reconfigure = getattr(stream, "reconfigure", None)
            if reconfigure is not None:
                reconfigure(write_through=True)


if __name__ == "__main__":
    main(sys.argv)
