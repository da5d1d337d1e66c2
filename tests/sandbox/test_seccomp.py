"""The worker seccomp filter: its encoding and logic (pure, through a small BPF interpreter), its
syscall numbers against the kernel headers, and the real thing: loaded into a child process with
prctl, and handed to bubblewrap with `--seccomp FD`."""

from __future__ import annotations

import errno
import fcntl
import json
import os
import platform
import re
import shutil
import signal
import struct
import subprocess
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pentarun.sandbox import seccomp
from pentarun.sandbox.seccomp import (
    ARCHES,
    CLONE_NAMESPACE_FLAGS,
    DENIED,
    SPECIAL,
    UnsupportedArchitecture,
    build_filter,
    compile_filter,
    filter_fd,
)

ALLOW, KILL = seccomp.RET_ALLOW, seccomp.RET_KILL_PROCESS
EPERM, ENOSYS = seccomp.RET_ERRNO | errno.EPERM, seccomp.RET_ERRNO | errno.ENOSYS
TIOCSTI, TIOCLINUX = 0x5412, 0x541C
CLONE_FLAGS = {
    "NEWTIME": 0x80, "NEWNS": 0x20000, "NEWCGROUP": 0x02000000, "NEWUTS": 0x04000000,
    "NEWIPC": 0x08000000, "NEWUSER": 0x10000000, "NEWPID": 0x20000000, "NEWNET": 0x40000000,
}  # fmt: skip
THREAD_FLAGS = 0x003D0F00  # what glibc's pthread_create passes: VM|FS|FILES|SIGHAND|THREAD|...
FORK_FLAGS = 0x01200011  # glibc fork: CHILD_SETTID|CHILD_CLEARTID|SIGCHLD
VFORK_FLAGS = 0x00004111  # posix_spawn on aarch64: VM|VFORK|SIGCHLD
DENIED_NAMES = [sc.name for sc in DENIED]


def instructions(program: bytes) -> list[tuple[int, int, int, int]]:
    return [struct.unpack_from("<HBBI", program, i) for i in range(0, len(program), 8)]


def run(program: bytes, nr: int, arch: int, args: Sequence[int] = ()) -> int:
    """Interpret a seccomp program the way the kernel does; the action it returns."""
    data = struct.pack("<IIQ6Q", nr & 0xFFFFFFFF, arch, 0, *(list(args) + [0] * 6)[:6])
    ops, pc, acc = instructions(program), 0, 0
    while True:
        code, jt, jf, k = ops[pc]
        if code == seccomp.LD_W_ABS:
            acc = struct.unpack_from("<I", data, k)[0]
            pc += 1
        elif code == seccomp.RET_K:
            return k
        else:
            taken = {
                seccomp.JEQ_K: acc == k,
                seccomp.JGE_K: acc >= k,
                seccomp.JSET_K: bool(acc & k),
            }[code]
            pc += 1 + (jt if taken else jf)


AF_VSOCK, AF_ALG = 40, 38


def expected(arch: str, denied: set[str], nr: int, audit: int, args: Sequence[int]) -> int:
    """What the filter must answer, written from the contract rather than from the program."""
    if audit != ARCHES[arch].audit_arch:
        return KILL
    if arch == "x86_64" and seccomp.X32_SYSCALL_BIT <= nr < 0xFFFFFFFF:
        return KILL
    lo = [a & 0xFFFFFFFF for a in (*args, 0, 0)]
    if any(sc.numbers.get(arch) == nr for sc in DENIED if sc.name in denied):
        return EPERM
    name = next((n for n, sc in SPECIAL.items() if sc.numbers[arch] == nr), None)
    if name == "clone":
        return EPERM if lo[0] & CLONE_NAMESPACE_FLAGS else ALLOW
    if name == "clone3":
        return ENOSYS
    if name == "personality":
        return ALLOW if lo[0] in (0, 0xFFFFFFFF) else EPERM
    if name == "ioctl":
        return EPERM if lo[1] in (TIOCSTI, TIOCLINUX) else ALLOW
    if name == "socket":
        return EPERM if lo[0] in (AF_VSOCK, AF_ALG) else ALLOW
    return ALLOW


def nr_of(name: str, arch: str) -> int:
    sc = SPECIAL.get(name) or next(s for s in DENIED if s.name == name)
    return sc.numbers[arch]


# --- pure: encoding and structure ------------------------------------------------------------


@pytest.mark.parametrize("arch", sorted(ARCHES))
def test_encoding_and_structure(arch):
    program = build_filter(arch)
    assert program and len(program) % 8 == 0
    ops = instructions(program)
    assert len(ops) <= seccomp.MAX_INSNS
    assert len(ops) < 100  # linear, but short: the kernel caches arg-free answers anyway
    # The arch check comes first and a mismatch kills the process.
    assert ops[0] == (seccomp.LD_W_ABS, 0, 0, seccomp.OFF_ARCH)
    code, jt, jf, k = ops[1]
    assert (code, jt, k) == (seccomp.JEQ_K, 0, ARCHES[arch].audit_arch)
    assert ops[2 + jf] == (seccomp.RET_K, 0, 0, KILL)
    for i, (code, jt, jf, k) in enumerate(ops):
        assert code in (
            seccomp.LD_W_ABS,
            seccomp.JEQ_K,
            seccomp.JGE_K,
            seccomp.JSET_K,
            seccomp.RET_K,
        )
        if code == seccomp.LD_W_ABS:
            assert k % 4 == 0 and k < seccomp.SECCOMP_DATA_SIZE
        if code in (seccomp.JEQ_K, seccomp.JGE_K, seccomp.JSET_K):
            assert i + 1 + max(jt, jf) < len(ops)  # lands inside the program
        if code in (seccomp.LD_W_ABS, seccomp.RET_K):
            assert jt == jf == 0
    assert ops[-1][0] == seccomp.RET_K  # no falling off the end


def test_the_build_is_deterministic_and_native_by_default():
    assert build_filter("x86_64") == build_filter("x86_64")
    if platform.machine() in ("x86_64", "aarch64") and sys.maxsize > 2**32:
        assert build_filter() == build_filter(platform.machine())


@pytest.mark.parametrize("arch", ["i386", "armv7l", "riscv64", "ppc64le", "x32", ""])
def test_other_arches_are_refused(arch):
    with pytest.raises(UnsupportedArchitecture, match="supported: x86_64, aarch64"):
        build_filter(arch)


@pytest.mark.parametrize(
    ("machine", "pointer", "arch"),
    [("x86_64", 8, "x86_64"), ("AMD64", 8, "x86_64"), ("aarch64", 8, "aarch64"),
     ("arm64", 8, "aarch64"), ("x86_64", 4, None), ("aarch64", 4, None), ("riscv64", 8, None)],
)  # fmt: skip
def test_native_arch(monkeypatch, machine, pointer, arch):
    monkeypatch.setattr(seccomp.platform, "machine", lambda: machine)
    monkeypatch.setattr(seccomp.struct, "calcsize", lambda fmt: pointer)
    if arch is None:  # a 32-bit userland on a 64-bit kernel gets no 64-bit filter
        with pytest.raises(UnsupportedArchitecture):
            seccomp.native_arch()
    else:
        assert seccomp.native_arch() == arch


# --- pure: the tables ------------------------------------------------------------------------


def test_every_denied_name_has_a_number_on_each_arch_and_a_reason():
    x86_only = {"iopl", "ioperm"}
    for sc in DENIED:
        assert sc.reason
        assert set(sc.numbers) == ({"x86_64"} if sc.name in x86_only else set(ARCHES)), sc.name
    names = [sc.name for sc in (*DENIED, *SPECIAL.values())]
    assert len(names) == len(set(names))
    for arch in ARCHES:  # two names on one number would deny the wrong syscall
        numbers = [sc.numbers[arch] for sc in (*DENIED, *SPECIAL.values()) if arch in sc.numbers]
        assert len(numbers) == len(set(numbers)), arch


def test_the_brief_deny_list_is_all_there():
    brief = [
        "ptrace",
        "process_vm_readv",
        "process_vm_writev",
        "mount",
        "umount2",
        "pivot_root",
        "chroot",
        "move_mount",
        "open_tree",
        "fsopen",
        "fsconfig",
        "fsmount",
        "fspick",
        "mount_setattr",
        "kexec_load",
        "kexec_file_load",
        "reboot",
        "init_module",
        "finit_module",
        "delete_module",
        "bpf",
        "perf_event_open",
        "keyctl",
        "add_key",
        "request_key",
        "unshare",
        "setns",
        "swapon",
        "swapoff",
        "syslog",
        "acct",
        "settimeofday",
        "clock_settime",
        "clock_adjtime",
        "adjtimex",
        "iopl",
        "ioperm",
        "userfaultfd",
        "open_by_handle_at",
        "name_to_handle_at",
        "quotactl",
        "lookup_dcookie",
        "vhangup",
        "kcmp",
        "io_uring_setup",
        "io_uring_enter",
        "io_uring_register",
    ]
    assert set(brief) == set(DENIED_NAMES)


# Well-known numbers a few of which must never be denied (a typo would break every worker).
ESSENTIAL = {
    "x86_64": {"read": 0, "write": 1, "close": 3, "mmap": 9, "rt_sigaction": 13, "openat": 257,
               "futex": 202, "exit_group": 231, "execve": 59, "vfork": 58, "wait4": 61,
               "socket": 41, "connect": 42, "getrandom": 318, "prctl": 157, "seccomp": 317},
    "aarch64": {"read": 63, "write": 64, "close": 57, "mmap": 222, "rt_sigaction": 134,
                "openat": 56, "futex": 98, "exit_group": 94, "execve": 221, "wait4": 260,
                "socket": 198, "connect": 203, "getrandom": 278, "prctl": 167, "seccomp": 277},
}  # fmt: skip


@pytest.mark.parametrize("arch", sorted(ARCHES))
def test_essential_syscalls_pass(arch):
    program = build_filter(arch)
    for name, nr in ESSENTIAL[arch].items():
        assert run(program, nr, ARCHES[arch].audit_arch) == ALLOW, name


def _header_numbers(path: Path) -> dict[str, int]:
    text = path.read_text()
    return {m[0]: int(m[1]) for m in re.findall(r"#define __NR(?:3264)?_(\w+)\s+(\d+)\b", text)}


HEADERS = {
    "x86_64": Path("/usr/include/x86_64-linux-gnu/asm/unistd_64.h"),
    "aarch64": Path("/usr/include/asm-generic/unistd.h"),
}


@pytest.mark.parametrize("arch", sorted(ARCHES))
def test_numbers_match_the_kernel_headers(arch):
    if not HEADERS[arch].exists():
        pytest.skip(f"{HEADERS[arch]} not installed (Debian linux-libc-dev)")
    header = _header_numbers(HEADERS[arch])
    checked = 0
    for sc in (*DENIED, *SPECIAL.values()):
        if sc.name in header:  # an old header may predate a syscall; lookup_dcookie may go
            assert sc.numbers.get(arch) == header[sc.name], (arch, sc.name)
            checked += 1
        else:
            assert arch not in sc.numbers or sc.numbers[arch] >= 440, (arch, sc.name)
    assert checked >= len(DENIED) - 3


# --- pure: the logic, against the contract ---------------------------------------------------

arches = st.sampled_from(sorted(ARCHES))
TABLED = sorted({n for sc in (*DENIED, *SPECIAL.values()) for n in sc.numbers.values()})
numbers = st.one_of(st.sampled_from(TABLED), st.integers(0, 500), st.integers(0, 2**32 - 1))
args = st.lists(st.integers(0, 2**64 - 1), min_size=2, max_size=6)
audits = st.one_of(
    st.sampled_from([a.audit_arch for a in ARCHES.values()] + [0x40000003, 0x40000028]),
    st.integers(0, 2**32 - 1),
)


@given(arches, numbers, audits, args)
def test_any_syscall_gets_the_answer_the_contract_says(arch, nr, audit, argv):
    assert run(build_filter(arch), nr, audit, argv) == expected(
        arch, set(DENIED_NAMES), nr, audit, argv
    )


@given(arches, st.sets(st.sampled_from(DENIED_NAMES)), st.data())
def test_any_deny_subset_compiles_to_what_it_says(arch, denied, data):
    program = compile_filter(arch, denied)
    audit = ARCHES[arch].audit_arch
    relevant = [sc.numbers[arch] for sc in (*DENIED, *SPECIAL.values()) if arch in sc.numbers]
    for _ in range(20):
        nr = data.draw(st.sampled_from(relevant) | numbers)
        argv = data.draw(args)
        assert run(program, nr, audit, argv) == expected(arch, denied, nr, audit, argv)


@pytest.mark.parametrize("arch", sorted(ARCHES))
def test_clone_flags(arch):
    program, audit, clone = build_filter(arch), ARCHES[arch].audit_arch, nr_of("clone", arch)
    for flags in (THREAD_FLAGS, FORK_FLAGS, VFORK_FLAGS, 0x11):  # 0x11: plain fork, SIGCHLD
        assert run(program, clone, audit, [flags]) == ALLOW, hex(flags)
    for name, flag in CLONE_FLAGS.items():
        for flags in (flag, flag | FORK_FLAGS, flag | THREAD_FLAGS, flag | 1 << 40):
            assert run(program, clone, audit, [flags]) == EPERM, (name, hex(flags))
    # High bits are ignored by the kernel (it reads the low 32): they cannot smuggle a flag.
    assert run(program, clone, audit, [FORK_FLAGS | 0xFFFFFFFF00000000]) == ALLOW
    assert run(program, nr_of("clone3", arch), audit, [0, 88]) == ENOSYS


@pytest.mark.parametrize("arch", sorted(ARCHES))
def test_personality_and_ioctl(arch):
    program, audit = build_filter(arch), ARCHES[arch].audit_arch
    pers, ioctl = nr_of("personality", arch), nr_of("ioctl", arch)
    assert run(program, pers, audit, [0xFFFFFFFF]) == ALLOW
    assert run(program, pers, audit, [0]) == ALLOW
    assert run(program, pers, audit, [0x0040000]) == EPERM  # ADDR_NO_RANDOMIZE
    assert run(program, pers, audit, [0x0400000]) == EPERM  # READ_IMPLIES_EXEC
    assert run(program, ioctl, audit, [0, TIOCSTI]) == EPERM
    assert run(program, ioctl, audit, [0, TIOCLINUX]) == EPERM
    assert run(program, ioctl, audit, [0, 1 << 32 | TIOCSTI]) == EPERM  # CVE-2019-10063's trick
    assert run(program, ioctl, audit, [0, 0x5401]) == ALLOW  # TCGETS


@pytest.mark.parametrize("arch", sorted(ARCHES))
def test_socket_families_that_pass_the_network_namespace_are_refused(arch):
    program, audit, nr = build_filter(arch), ARCHES[arch].audit_arch, nr_of("socket", arch)
    assert run(program, nr, audit, [AF_VSOCK, 1, 0]) == EPERM
    assert run(program, nr, audit, [AF_ALG, 5, 0]) == EPERM
    for family in (1, 2, 10, 16):  # AF_UNIX, AF_INET, AF_INET6, AF_NETLINK
        assert run(program, nr, audit, [family, 1, 0]) == ALLOW


def test_x86_64_kills_x32_and_foreign_arches_but_passes_minus_one():
    program, audit = build_filter("x86_64"), ARCHES["x86_64"].audit_arch
    assert run(program, 0x40000000 | 39, audit) == KILL
    assert run(program, 0x40000000, audit) == KILL
    assert run(program, 0xFFFFFFFF, audit) == ALLOW  # the kernel answers ENOSYS
    assert run(program, 39, 0x40000003) == KILL  # AUDIT_ARCH_I386: int 0x80
    assert run(build_filter("aarch64"), 39, 0x40000028) == KILL  # AUDIT_ARCH_ARM (compat)
    assert run(build_filter("aarch64"), 0x40000000 | 39, ARCHES["aarch64"].audit_arch) == ALLOW


def test_compile_refuses_unknown_names_and_the_assembler_bounds_jumps():
    with pytest.raises(ValueError, match="no syscall"):
        compile_filter("x86_64", ["no_such_call"])
    far = [seccomp._Op(seccomp.JEQ_K, 1, jt="end")] + [seccomp._Op(seccomp.RET_K, 0)] * 256
    with pytest.raises(ValueError, match="out of reach"):
        seccomp._assemble([*far, "end", seccomp._Op(seccomp.RET_K, 0)])
    with pytest.raises(ValueError, match="out of reach"):
        seccomp._assemble([seccomp._Op(seccomp.JEQ_K, 1, jt="end"), "end"])


# --- the memfd for bwrap -------------------------------------------------------------------


@pytest.mark.skipif(not hasattr(os, "memfd_create"), reason="memfd_create is Linux-only")
def test_filter_fd_is_sealed_at_offset_zero_and_closes_on_exec():
    program = build_filter("x86_64")
    fd = filter_fd(program)
    try:
        assert os.lseek(fd, 0, os.SEEK_CUR) == 0
        assert fcntl.fcntl(fd, fcntl.F_GETFD) & fcntl.FD_CLOEXEC
        assert os.read(fd, 1 << 16) == program
        with pytest.raises(PermissionError):
            os.pwrite(fd, b"\0" * 8, 0)
    finally:
        os.close(fd)
    for bad in (b"", b"1234567"):
        with pytest.raises(ValueError):
            filter_fd(bad)


# --- real: the filter loaded into a child process ------------------------------------------

NATIVE = platform.machine() if sys.platform == "linux" and sys.maxsize > 2**32 else ""
real = pytest.mark.skipif(
    NATIVE not in ARCHES, reason="the real filter runs on 64-bit x86_64/aarch64 Linux only"
)

# Run by a fresh interpreter, on its own (no pentarun import): argv = mode, config JSON, fd.
# Modes: "load" loads the program from the fd, "none" runs unfiltered (the control), "bwrap"
# runs under bwrap's --seccomp, "x32"/"int80" load and then make one foreign-ABI call
# ("int80-none": the same call unfiltered).
# Every probe's arguments are harmless unfiltered; it prints {probe: errno (0 = success)}.
PROBE = r"""
import ctypes, json, os, resource, socket, subprocess, sys, threading
resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
mode, cfg = sys.argv[1], json.loads(sys.argv[2])
libc = ctypes.CDLL(None, use_errno=True)
libc.syscall.restype = libc.ptrace.restype = libc.personality.restype = ctypes.c_long
U, L = ctypes.c_ulong, ctypes.c_long

def err(ret):
    return ctypes.get_errno() if ret == -1 else 0

def call(fn, *args):
    ctypes.set_errno(0)
    return err(fn(*args))

def raw(nr, *args):
    ctypes.set_errno(0)
    ret = libc.syscall(L(nr), *(L(a) for a in args))
    if ret == 0 and nr == cfg["clone"]:  # a namespace clone got through: the child leaves
        os._exit(0)
    return err(ret)

if mode in ("load", "x32", "int80"):
    program = b""
    while chunk := os.read(int(sys.argv[3]), 65536):
        program += chunk
    class Fprog(ctypes.Structure):
        _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.c_void_p)]
    buf = ctypes.create_string_buffer(program, len(program))
    prog = Fprog(len(program) // 8, ctypes.addressof(buf))
    assert libc.prctl(U(38), U(1), U(0), U(0), U(0)) == 0  # PR_SET_NO_NEW_PRIVS
    assert libc.prctl(U(22), U(2), ctypes.byref(prog), U(0), U(0)) == 0, ctypes.get_errno()

if mode == "x32":
    raw(0x40000000 | 39)  # x32 getpid
    sys.exit(0)
if mode in ("int80", "int80-none"):
    import mmap
    code = bytes.fromhex("b814000000cd80c3")  # mov eax, 20 (i386 getpid); int 0x80; ret
    page = mmap.mmap(-1, 4096, prot=mmap.PROT_READ | mmap.PROT_WRITE | mmap.PROT_EXEC)
    page.write(code)
    fn = ctypes.CFUNCTYPE(ctypes.c_int)(ctypes.addressof(ctypes.c_char.from_buffer(page)))
    print(json.dumps({"pid": fn() == os.getpid()}))
    sys.exit(0)

NOPE = b"/nonexistent-pentarun"
out = {}
blank = ctypes.create_string_buffer(256)
# Through glibc's own wrappers: numbers independent of our table.
out["mount"] = call(libc.mount, b"none", NOPE, b"tmpfs", U(0), None)
out["umount2"] = call(libc.umount2, NOPE, 0)
out["chroot"] = call(libc.chroot, NOPE)
out["pivot_root"] = call(libc.pivot_root, NOPE, NOPE)
out["ptrace(ATTACH)"] = call(libc.ptrace, 16, 0x3FFFFFFF, None, None)
out["process_vm_readv"] = call(libc.process_vm_readv, 0x3FFFFFFF, None, U(0), None, U(0), U(0))
out["setns"] = call(libc.setns, -1, 0)
out["acct"] = call(libc.acct, NOPE + b"/x")
out["swapon"] = call(libc.swapon, NOPE, 0)
out["swapoff"] = call(libc.swapoff, NOPE)
out["syslog"] = call(libc.klogctl, 10, None, 0)  # SYSLOG_ACTION_SIZE_BUFFER
out["clock_settime"] = call(libc.clock_settime, 0x7FFF, blank)
out["adjtimex"] = call(libc.adjtimex, blank)  # modes 0: a read
out["clock_adjtime"] = call(libc.clock_adjtime, 0x7FFF, blank)
out["reboot"] = call(libc.reboot, 0x12345678)  # no such command
out["init_module"] = call(libc.init_module, None, U(0), b"")
out["delete_module"] = call(libc.delete_module, b"pentarun_no_such_module", 0o4000)
out["vhangup"] = call(libc.vhangup)  # no controlling terminal: start_new_session
out["name_to_handle_at"] = call(libc.name_to_handle_at, -100, NOPE, blank, blank, 0)
out["open_by_handle_at"] = call(libc.open_by_handle_at, -1, blank, 0)
out["quotactl"] = call(libc.quotactl, 0x7FFFFFFF, NOPE, 0, None)
out["personality(ADDR_NO_RANDOMIZE)"] = call(libc.personality, U(0x0040000))
out["personality(query)"] = call(libc.personality, U(0xFFFFFFFF))
if cfg["arch"] == "x86_64":
    out["iopl"] = call(libc.iopl, 0)
    out["ioperm"] = call(libc.ioperm, U(0), U(0), 0)
devnull = os.open("/dev/null", os.O_RDONLY)
c = ctypes.c_char(b"x")
out["ioctl(TIOCSTI)"] = call(libc.ioctl, devnull, U(0x5412), ctypes.byref(c))
out["ioctl(1<<32|TIOCSTI)"] = call(libc.ioctl, devnull, U(1 << 32 | 0x5412), ctypes.byref(c))
r, w = os.pipe()
n = ctypes.c_int(-1)
out["ioctl(FIONREAD)"] = call(libc.ioctl, r, U(0x541B), ctypes.byref(n))
# Through the table's numbers, every argument -1 (harmless: each call fails on its own).
for name, nr in cfg["denied"].items():
    out["raw:" + name] = raw(nr, -1, -1, -1, -1, -1, -1)
for flag, bit in cfg["clone_flags"].items():
    out["clone(" + flag + ")"] = raw(cfg["clone"], bit | 17, 0, 0, 0, 0)  # 17: SIGCHLD
out["clone3"] = raw(cfg["clone3"], 0, 0)
out["nr -1"] = raw(-1)
# What a worker does all day.
t = threading.Thread(target=lambda: None); t.start(); t.join()
out["thread"] = 0
pid = os.fork()
if pid == 0:
    os._exit(0)
out["fork"] = os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1])
out["subprocess"] = subprocess.run(["/bin/true"]).returncode
pid = os.posix_spawn("/bin/true", ["/bin/true"], os.environ)
out["posix_spawn"] = os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1])
with socket.socket() as s:
    out["socket"] = 0
a, b = socket.socketpair()
a.sendall(b"ping")
out["socketpair"] = 0 if b.recv(4) == b"ping" else -1
with open(sys.executable, "rb") as f:
    out["read file"] = 0 if f.read(4) == b"\x7fELF" else -1
# Last: unfiltered, these change what the probe may do (a user namespace drops its privileges
# in the first one; TRACEME would stop the probe at its next signal).
out["unshare"] = call(libc.unshare, 0x10000000)
out["unshare(NEWNET)"] = call(libc.unshare, 0x40000000)
if mode != "none":
    out["ptrace(TRACEME)"] = call(libc.ptrace, 0, 0, None, None)
print(json.dumps(out))
"""

WORKS = ["thread", "fork", "subprocess", "posix_spawn", "socket", "socketpair", "read file",
         "personality(query)", "ioctl(FIONREAD)"]  # fmt: skip
REFUSED_BY_LIBC = ["unshare", "unshare(NEWNET)", "mount", "umount2", "chroot", "pivot_root",
                   "ptrace(ATTACH)", "process_vm_readv", "setns", "acct", "swapon", "swapoff",
                   "syslog", "clock_settime", "adjtimex", "clock_adjtime", "reboot",
                   "init_module", "delete_module", "vhangup", "name_to_handle_at",
                   "open_by_handle_at", "quotactl", "personality(ADDR_NO_RANDOMIZE)",
                   "ioctl(TIOCSTI)", "ioctl(1<<32|TIOCSTI)"]  # fmt: skip


def probe_config(arch: str) -> str:
    return json.dumps({
        "arch": arch,
        "denied": {sc.name: sc.numbers[arch] for sc in DENIED if arch in sc.numbers},
        "clone": nr_of("clone", arch),
        "clone3": nr_of("clone3", arch),
        "clone_flags": CLONE_FLAGS,
    })  # fmt: skip


def run_probe(mode: str, prefix: Sequence[str] = (), seccomp_fd: bool = True) -> Any:
    """Run PROBE in a fresh interpreter (its own session); the completed process."""
    fd = filter_fd(build_filter()) if seccomp_fd else -1
    try:
        fd_args = ["--seccomp", str(fd)] if prefix and seccomp_fd else []
        argv = [*prefix, *fd_args, sys.executable, "-c", PROBE, mode, probe_config(NATIVE), str(fd)]
        return subprocess.run(
            argv,
            pass_fds=(fd,) if seccomp_fd else (),
            capture_output=True,
            timeout=120,
            start_new_session=True,
            check=False,
        )
    finally:
        if seccomp_fd:
            os.close(fd)


def results(done: Any) -> Mapping[str, int]:
    assert done.returncode == 0, done.stderr.decode()
    out: Mapping[str, int] = json.loads(done.stdout)
    return out


@pytest.fixture(scope="module")
def filtered() -> Mapping[str, int]:
    return results(run_probe("load"))


@pytest.fixture(scope="module")
def unfiltered() -> Mapping[str, int]:
    return results(run_probe("none", seccomp_fd=False))


@real
def test_real_denied_calls_fail_with_eperm(filtered):
    refused = [*REFUSED_BY_LIBC, *(f"raw:{n}" for n in DENIED_NAMES if NATIVE in nr_numbers(n))]
    refused += [f"clone({flag})" for flag in CLONE_FLAGS]
    if NATIVE == "x86_64":
        refused += ["iopl", "ioperm"]
    wrong = {name: errno.errorcode.get(filtered[name], filtered[name]) for name in refused
             if filtered[name] != errno.EPERM}  # fmt: skip
    assert not wrong
    assert filtered["ptrace(TRACEME)"] == errno.EPERM


def nr_numbers(name: str) -> Mapping[str, int]:
    return next(sc.numbers for sc in DENIED if sc.name == name)


@real
def test_real_clone3_is_enosys_and_a_worker_still_works(filtered):
    assert filtered["clone3"] == errno.ENOSYS  # so glibc falls back to the checked clone
    assert filtered["nr -1"] == errno.ENOSYS
    assert {name: filtered[name] for name in WORKS} == dict.fromkeys(WORKS, 0)


@real
def test_real_eperm_comes_from_the_filter(unfiltered):
    """The control: unfiltered, the same calls do not answer EPERM (so the test means it)."""
    assert {name: unfiltered[name] for name in WORKS} == dict.fromkeys(WORKS, 0)
    assert unfiltered["clone3"] != errno.ENOSYS
    assert unfiltered["ioctl(TIOCSTI)"] == errno.ENOTTY
    if not full_privileges():
        pytest.skip("the rest of the control needs root with every capability (as CI runs)")
    eperm = [name for name in (*REFUSED_BY_LIBC, "unshare") if unfiltered[name] == errno.EPERM]
    assert not eperm
    clones = {f"clone({flag})": unfiltered[f"clone({flag})"] for flag in CLONE_FLAGS}
    assert clones == dict.fromkeys(clones, 0)


def full_privileges() -> bool:
    """Root with the capabilities the control's calls check (CapEff, /proc/self/status)."""
    status = Path("/proc/self/status").read_text()
    effective = int(re.search(r"^CapEff:\s*([0-9a-f]+)", status, re.M)[1], 16)  # type: ignore[index]
    # DAC_READ_SEARCH, SYS_MODULE..SYS_BOOT, SYS_TIME, SYS_TTY_CONFIG, SYSLOG
    needed = [2, 16, 17, 18, 19, 20, 21, 22, 25, 26, 34]
    return os.geteuid() == 0 and all(effective >> cap & 1 for cap in needed)


@real
def test_real_x32_calls_kill_the_process():
    if NATIVE != "x86_64":
        pytest.skip("x32 is an x86_64 ABI")
    done = run_probe("x32")
    assert done.returncode == -signal.SIGSYS, done.stderr.decode()


@real
def test_real_i386_calls_kill_the_process():
    if NATIVE != "x86_64":
        pytest.skip("int 0x80 is x86")
    control = subprocess.run(
        [sys.executable, "-c", PROBE, "int80-none", probe_config(NATIVE), "-1"],
        capture_output=True, timeout=60, check=False,
    )  # fmt: skip
    if control.returncode != 0:  # no IA32 emulation in this kernel: nothing to refuse
        pytest.skip(f"int 0x80 does not work here unfiltered ({control.returncode})")
    assert json.loads(control.stdout) == {"pid": True}
    done = run_probe("int80")
    assert done.returncode == -signal.SIGSYS, done.stderr.decode()


# --- real: handed to bubblewrap ------------------------------------------------------------

BWRAP = shutil.which("bwrap")
BWRAP_ARGV = [BWRAP or "bwrap", "--ro-bind", "/", "/", "--dev", "/dev", "--proc", "/proc",
              "--unshare-all", "--die-with-parent", "--new-session"]  # fmt: skip


@real
@pytest.mark.skipif(BWRAP is None, reason="bubblewrap is not installed")
def test_bwrap_loads_the_filter():
    inside = results(run_probe("bwrap", prefix=BWRAP_ARGV))
    for name in ("unshare", "unshare(NEWNET)", "mount", "ptrace(TRACEME)", "clone(NEWUSER)"):
        assert inside[name] == errno.EPERM, name
    assert inside["clone3"] == errno.ENOSYS
    assert {name: inside[name] for name in WORKS} == dict.fromkeys(WORKS, 0)
    # The control: the same sandbox without the filter lets the probe make a user namespace.
    bare = results(run_probe("none", prefix=BWRAP_ARGV, seccomp_fd=False))
    if bare["unshare"] != 0:
        pytest.skip(f"no nested user namespace here even unfiltered ({bare['unshare']})")
