"""The syscall filter every plugin worker runs under: a classic-BPF seccomp program. Pure.

`build_filter(arch)` compiles the deny table below into the `struct sock_filter[]` that
bubblewrap loads with `--seccomp FD`: 8 bytes per instruction (u16 code, u8 jt, u8 jf, u32 k),
no header, little-endian (both supported arches are). `filter_fd` is the one I/O helper, kept
apart from the builder: it puts a program in a sealed memfd for bwrap to read.

The program, in order:
1. `seccomp_data.arch` must be the arch the program was built for, else KILL_PROCESS (a 32-bit
   or foreign-ABI syscall would dodge every number below); on x86_64 the x32 ABI
   (nr >= 0x40000000, except the -1 that tracers use to skip a syscall) is killed as well.
2. Each syscall of `DENIED` returns EPERM.
3. `clone` with any CLONE_NEW* bit in its flags (the first argument on x86_64 and aarch64)
   returns EPERM, so threads and fork keep working; `clone3` returns ENOSYS (its flags live in
   memory a filter cannot read; glibc then falls back to `clone`, which is checked);
   `personality` may only query or set the default PER_LINUX; `ioctl` TIOCSTI and TIOCLINUX
   (typing into a terminal) return EPERM.
4. Everything else is allowed.

Invariants (tested): the arch check comes first; every jump lands inside the program and goes
forward; every load reads an aligned word of `seccomp_data`; syscall numbers come from the table
of the arch the program checks for, never from the machine that builds it. Arguments are
compared on their low 32 bits only: the kernel itself reads clone flags, personality and ioctl
commands as 32-bit values, so high bits can neither hide a flag nor smuggle one.

Cost: `build_filter` compiles once per arch (cached). The checks are a linear list, which is
fine: since Linux 5.11 the kernel caches the ALLOW verdict of every syscall whose answer does not
depend on its arguments, so only clone, personality and ioctl run the program at all.
"""

from __future__ import annotations

import fcntl
import functools
import os
import platform
import struct
import sys
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

__all__ = [
    "ARCHES",
    "CLONE_NAMESPACE_FLAGS",
    "DENIED",
    "SPECIAL",
    "Arch",
    "Syscall",
    "UnsupportedArchitecture",
    "build_filter",
    "compile_filter",
    "filter_fd",
    "native_arch",
]


class UnsupportedArchitecture(RuntimeError):
    """No filter exists for this machine: the caller must not start workers (fail closed)."""


@dataclass(frozen=True)
class Arch:
    name: str
    audit_arch: int  # AUDIT_ARCH_* as the kernel reports it in seccomp_data.arch
    refuse_x32: bool  # x86_64 only: the x32 ABI shares AUDIT_ARCH_X86_64 but has nr | 0x40000000


ARCHES: Mapping[str, Arch] = {
    # EM_X86_64 (62) | __AUDIT_ARCH_64BIT | __AUDIT_ARCH_LE
    "x86_64": Arch("x86_64", 0xC000003E, refuse_x32=True),
    # EM_AARCH64 (183) | __AUDIT_ARCH_64BIT | __AUDIT_ARCH_LE
    "aarch64": Arch("aarch64", 0xC00000B7, refuse_x32=False),
}

_MACHINES = {"x86_64": "x86_64", "amd64": "x86_64", "aarch64": "aarch64", "arm64": "aarch64"}


@dataclass(frozen=True)
class Syscall:
    name: str
    numbers: Mapping[str, int]  # arch -> number; an arch without the syscall has no entry
    reason: str


def _sc(name: str, x86_64: int | None, aarch64: int | None, reason: str) -> Syscall:
    numbers = {"x86_64": x86_64, "aarch64": aarch64}
    return Syscall(name, {a: n for a, n in numbers.items() if n is not None}, reason)


# Numbers: x86_64 from arch/x86/entry/syscalls/syscall_64.tbl, aarch64 from the asm-generic
# table (include/uapi/asm-generic/unistd.h); cross-checked against libseccomp's syscalls.csv
# and, in the tests, against the kernel headers when the machine has them. Numbers >= 424 are
# shared by every arch.
_MOUNT = "change the filesystem view the sandbox built (mounts are the sandbox's walls)"
DENIED: tuple[Syscall, ...] = (
    # name                         x86_64 aarch64  why a plugin never needs it
    _sc("ptrace", 101, 117, "inspect or steer another process: read its memory, inject code"),
    _sc("process_vm_readv", 310, 270, "read another process's memory"),
    _sc("process_vm_writev", 311, 271, "write another process's memory"),
    _sc("mount", 165, 40, _MOUNT),
    _sc("umount2", 166, 39, _MOUNT + "; uncover what a mount hides"),
    _sc("pivot_root", 155, 41, _MOUNT),
    _sc("chroot", 161, 51, "the classic chroot escape; path checks get confused"),
    _sc("move_mount", 429, 429, _MOUNT + " (new mount API)"),
    _sc("open_tree", 428, 428, _MOUNT + " (new mount API: clone a mount tree)"),
    _sc("fsopen", 430, 430, _MOUNT + " (new mount API)"),
    _sc("fsconfig", 431, 431, _MOUNT + " (new mount API)"),
    _sc("fsmount", 432, 432, _MOUNT + " (new mount API)"),
    _sc("fspick", 433, 433, _MOUNT + " (new mount API: reconfigure a mount)"),
    _sc("mount_setattr", 442, 442, _MOUNT + " (e.g. make a read-only mount writable)"),
    _sc("kexec_load", 246, 104, "boot another kernel"),
    _sc("kexec_file_load", 320, 294, "boot another kernel"),
    _sc("reboot", 169, 142, "reboot or halt the machine"),
    _sc("init_module", 175, 105, "load kernel code"),
    _sc("finit_module", 313, 273, "load kernel code"),
    _sc("delete_module", 176, 106, "unload kernel code"),
    _sc("bpf", 321, 280, "eBPF: tracing, a large kernel attack surface (verifier bugs)"),
    _sc("perf_event_open", 298, 241, "profiling: side channels, kernel attack surface"),
    _sc("keyctl", 250, 219, "kernel keyrings are not namespaced: other tenants' keys"),
    _sc("add_key", 248, 217, "kernel keyrings are not namespaced"),
    _sc("request_key", 249, 218, "kernel keyrings are not namespaced"),
    _sc("unshare", 272, 97, "new namespaces: a user namespace opens root-only kernel code"),
    _sc("setns", 308, 268, "join another namespace"),
    _sc("swapon", 167, 224, "system swap configuration"),
    _sc("swapoff", 168, 225, "system swap configuration"),
    _sc("syslog", 103, 116, "kernel log: kernel addresses, other tenants' messages"),
    _sc("acct", 163, 89, "system process accounting"),
    _sc("settimeofday", 164, 170, "set the system clock"),
    _sc("clock_settime", 227, 112, "set the system clock"),
    _sc("clock_adjtime", 305, 266, "tune the system clock"),
    _sc("adjtimex", 159, 171, "tune the system clock"),
    _sc("iopl", 172, None, "raw I/O port access (x86 only)"),
    _sc("ioperm", 173, None, "raw I/O port access (x86 only)"),
    _sc("userfaultfd", 323, 282, "stalls kernel copies at will: widens races in exploits"),
    _sc("open_by_handle_at", 304, 265, "opens files by handle, escaping bind mounts (shocker)"),
    _sc("name_to_handle_at", 303, 264, "the handle half of open_by_handle_at"),
    _sc("quotactl", 179, 60, "filesystem quota administration"),
    _sc("lookup_dcookie", 212, 18, "oprofile internals (removed in Linux 6.9)"),
    _sc("vhangup", 153, 58, "hang up the terminal"),
    _sc("kcmp", 312, 272, "compare other processes' kernel objects (pointer-order leaks)"),
    _sc("io_uring_setup", 425, 425, "io_uring operations bypass seccomp; big attack surface"),
    _sc("io_uring_enter", 426, 426, "io_uring operations bypass seccomp"),
    _sc("io_uring_register", 427, 427, "io_uring operations bypass seccomp"),
)

# Syscalls the program inspects by argument instead of denying outright.
SPECIAL: Mapping[str, Syscall] = {
    s.name: s
    for s in (
        _sc("clone", 56, 220, "EPERM with a CLONE_NEW* flag; threads and fork pass"),
        _sc("clone3", 435, 435, "ENOSYS: flags unreadable to BPF; glibc falls back to clone"),
        _sc("personality", 135, 92, "only query or PER_LINUX: no ADDR_NO_RANDOMIZE etc."),
        _sc("ioctl", 16, 29, "EPERM for TIOCSTI/TIOCLINUX: no typing into a terminal"),
        _sc("socket", 41, 198, "EPERM for AF_VSOCK and AF_ALG: not network-namespaced"),
    )
}

CLONE_NAMESPACE_FLAGS = (
    0x00000080  # CLONE_NEWTIME: clone() reads this bit as part of the exit signal (no real
    #             signal has it), so refusing it costs nothing; unshare and clone3 are refused
    | 0x00020000  # CLONE_NEWNS
    | 0x02000000  # CLONE_NEWCGROUP
    | 0x04000000  # CLONE_NEWUTS
    | 0x08000000  # CLONE_NEWIPC
    | 0x10000000  # CLONE_NEWUSER
    | 0x20000000  # CLONE_NEWPID
    | 0x40000000  # CLONE_NEWNET
)
PER_LINUX, PERSONALITY_QUERY = 0x00000000, 0xFFFFFFFF  # the default persona; "just tell me"
_IOCTL_DENIED = (0x5412, 0x541C)  # TIOCSTI, TIOCLINUX (asm-generic, x86_64 and aarch64)
# AF_VSOCK (40) reaches the hypervisor and host past the network namespace; AF_ALG (38) is
# the kernel crypto API, an attack surface no plugin needs
_SOCKET_FAMILIES_DENIED = (40, 38)

# linux/bpf_common.h: BPF_LD|BPF_W|BPF_ABS, BPF_JMP|BPF_J*|BPF_K, BPF_RET|BPF_K
LD_W_ABS, JEQ_K, JGE_K, JSET_K, RET_K = 0x20, 0x15, 0x35, 0x45, 0x06
# linux/seccomp.h
RET_KILL_PROCESS, RET_ERRNO, RET_ALLOW = 0x80000000, 0x00050000, 0x7FFF0000
EPERM, ENOSYS = 1, 38  # the same on x86_64 and aarch64 (asm-generic/errno-base.h, errno.h)
X32_SYSCALL_BIT = 0x40000000
# struct seccomp_data { int nr; u32 arch; u64 instruction_pointer; u64 args[6]; }
OFF_NR, OFF_ARCH, SECCOMP_DATA_SIZE = 0, 4, 64
MAX_INSNS = 4096  # BPF_MAXINSNS
_INSN = struct.Struct("<HBBI")


def _arg_lo(i: int) -> int:
    """Offset of the low 32 bits of args[i] (little-endian)."""
    return 16 + 8 * i


@dataclass(frozen=True)
class _Op:
    code: int
    k: int
    jt: str | None = None  # a label; None = the next instruction
    jf: str | None = None


def _assemble(items: Iterable[_Op | str]) -> bytes:
    """Encode ops, resolving labels (a str marks the next op) to forward jumps of 0..255."""
    where: dict[str, int] = {}
    ops: list[_Op] = []
    for item in items:
        if isinstance(item, str):
            if item in where:
                raise ValueError(f"label {item!r} defined twice")
            where[item] = len(ops)
        else:
            ops.append(item)
    if len(ops) > MAX_INSNS:
        raise ValueError(f"{len(ops)} instructions: the kernel takes at most {MAX_INSNS}")

    def offset(label: str | None, at: int) -> int:
        if label is None:
            return 0
        jump = where[label] - (at + 1)
        if not 0 <= jump <= 255 or where[label] >= len(ops):
            raise ValueError(f"jump from {at} to {label!r} out of reach")
        return jump

    return b"".join(
        _INSN.pack(op.code, offset(op.jt, i), offset(op.jf, i), op.k) for i, op in enumerate(ops)
    )


def _number(name: str, arch: str) -> int | None:
    for table in (DENIED, SPECIAL.values()):
        for sc in table:
            if sc.name == name:
                return sc.numbers.get(arch)
    raise ValueError(f"no syscall {name!r} in the tables")


def _arch(name: str) -> Arch:
    try:
        return ARCHES[name]
    except KeyError:
        raise UnsupportedArchitecture(
            f"no seccomp filter for architecture {name!r} (supported: {', '.join(ARCHES)})"
        ) from None


def native_arch() -> str:
    """The arch of this Python process (a 32-bit or big-endian userland is refused)."""
    machine = platform.machine().lower()
    arch = _MACHINES.get(machine)
    if arch is None or struct.calcsize("P") != 8 or sys.byteorder != "little":
        raise UnsupportedArchitecture(
            f"no seccomp filter for this machine ({machine}, {8 * struct.calcsize('P')}-bit "
            f"{sys.byteorder}-endian Python; supported: {', '.join(ARCHES)})"
        )
    return arch


def compile_filter(arch: str, denied: Iterable[str]) -> bytes:
    """The program for `arch` denying `denied` (names an arch lacks are skipped)."""
    a = _arch(arch)
    numbers = sorted({n for n in (_number(name, a.name) for name in denied) if n is not None})
    special = {name: sc.numbers[a.name] for name, sc in SPECIAL.items()}
    items: list[_Op | str] = [
        _Op(LD_W_ABS, OFF_ARCH),
        _Op(JEQ_K, a.audit_arch, jf="kill"),
        _Op(LD_W_ABS, OFF_NR),
    ]
    if a.refuse_x32:
        items += [
            _Op(JGE_K, X32_SYSCALL_BIT, jf="syscalls"),
            _Op(JEQ_K, 0xFFFFFFFF, jt="syscalls", jf="kill"),
            "syscalls",
        ]
    items += [_Op(JEQ_K, n, jt="eperm") for n in numbers]
    items += [
        _Op(JEQ_K, special["clone"], jt="clone"),
        _Op(JEQ_K, special["clone3"], jt="enosys"),
        _Op(JEQ_K, special["personality"], jt="personality"),
        _Op(JEQ_K, special["ioctl"], jt="ioctl"),
        _Op(JEQ_K, special["socket"], jt="socket"),
        _Op(RET_K, RET_ALLOW),
        "clone",
        _Op(LD_W_ABS, _arg_lo(0)),
        _Op(JSET_K, CLONE_NAMESPACE_FLAGS, jt="eperm", jf="allow"),
        "personality",
        _Op(LD_W_ABS, _arg_lo(0)),
        _Op(JEQ_K, PER_LINUX, jt="allow"),
        _Op(JEQ_K, PERSONALITY_QUERY, jt="allow", jf="eperm"),
        "ioctl",
        _Op(LD_W_ABS, _arg_lo(1)),
        *(_Op(JEQ_K, cmd, jt="eperm") for cmd in _IOCTL_DENIED),
        _Op(RET_K, RET_ALLOW),
        "socket",
        _Op(LD_W_ABS, _arg_lo(0)),
        *(_Op(JEQ_K, family, jt="eperm") for family in _SOCKET_FAMILIES_DENIED),
        "allow",
        _Op(RET_K, RET_ALLOW),
        "eperm",
        _Op(RET_K, RET_ERRNO | EPERM),
        "enosys",
        _Op(RET_K, RET_ERRNO | ENOSYS),
        "kill",
        _Op(RET_K, RET_KILL_PROCESS),
    ]
    return _assemble(items)


@functools.cache
def _built(arch: str) -> bytes:
    return compile_filter(arch, (sc.name for sc in DENIED))


def build_filter(arch: str | None = None) -> bytes:
    """The worker filter for `arch` (default: this process's); raises UnsupportedArchitecture."""
    return _built(native_arch() if arch is None else _arch(arch).name)


def filter_fd(program: bytes) -> int:
    """A sealed memfd at offset 0 holding `program`, for `bwrap --seccomp FD`.

    The fd is close-on-exec: hand it to bwrap with `pass_fds`, one fd per spawn (bwrap reads to
    EOF, so a shared offset would race), and close it once bwrap has started.
    """
    if not program or len(program) % _INSN.size:
        raise ValueError(f"a filter is a non-empty multiple of {_INSN.size} bytes")
    fd = os.memfd_create("pentarun-seccomp", os.MFD_CLOEXEC | os.MFD_ALLOW_SEALING)
    try:
        view = memoryview(program)
        while view:
            view = view[os.write(fd, view) :]
        seals = fcntl.F_SEAL_SEAL | fcntl.F_SEAL_SHRINK | fcntl.F_SEAL_GROW | fcntl.F_SEAL_WRITE
        fcntl.fcntl(fd, fcntl.F_ADD_SEALS, seals)
        os.lseek(fd, 0, os.SEEK_SET)
    except BaseException:
        os.close(fd)
        raise
    return fd
