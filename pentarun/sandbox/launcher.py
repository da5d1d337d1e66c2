"""The sandbox as the supervisor uses it: check it once, then prepare each worker's launch.

    sandbox = Sandbox(settings, data_dir);  status = sandbox.check()   (blocking: off the loop)
    launch = sandbox.prepare(spec, resources)                        (blocking: off the loop)
    ... start launch.command with launch.pass_fds ...;  launch.close_fds();  launch.release()

Where the kernel offers Landlock, the worker's first step inside the sandbox is confine.py,
which restricts it to what the mounts already give before running its script (defence in
depth); the status says which Landlock ABI is in force, or that the kernel has none.

Fail closed: with `security.sandbox = "on"` and a sandbox that cannot be set up (no
bubblewrap, no cgroups, no seccomp for this architecture, bubblewrap refusing), `prepare`
raises SandboxUnavailable with the reason and no worker starts. `"off"` is the only way to run
unsandboxed; it is reported by the server (start, /readyz, plugin detail, audit log).
"""

from __future__ import annotations

import contextlib
import itertools
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import msgspec

from ..config import SecurityConfig
from ..ipc.env import SANDBOX_EGRESS_PORT
from ..packages.manifest import Resources
from . import bwrap, confine, seccomp
from .cgroups import CgroupUnavailable, WorkerCgroup, layout, remove_stale
from .profile import Bind, Host, Limits, landlock_rules, profile_for
from .uids import UidsExhausted, UidTable

SYSTEM_DIRS = ("/usr", "/lib", "/lib32", "/lib64", "/bin", "/sbin")
SYSTEM_FILES = (
    "/etc/ld.so.cache",
    "/etc/localtime",
    "/etc/hosts",
    "/etc/nsswitch.conf",
    "/etc/ssl/certs",  # not /etc/ssl: its private/ holds the host's TLS keys
    "/etc/ca-certificates",
    "/etc/alternatives",
)
SDK_DIR = str(Path(__file__).resolve().parents[1])  # the `pentarun` package
CONFINE = str(Path(__file__).resolve().parent / "confine.py")
RESERVED = "_"  # no plugin key starts with it: the sandbox's own runs never share a plugin's
# what the sandbox's own runs (the check, the escape probes) get: not the server's environment
MINIMAL_ENV = {"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8", "PYTHONNOUSERSITE": "1"}


class SandboxUnavailable(Exception):
    """The sandbox cannot be set up: no worker may start (fail closed)."""


OFF_WARNING = (
    "security.sandbox is off: plugin workers run unsandboxed, as the server's user, and can "
    "step around every lane"
)


class SandboxStatus(msgspec.Struct, frozen=True):
    mode: str  # "on" | "off"
    ok: bool
    reason: str = ""
    landlock: int = 0  # the Landlock ABI workers are confined with; 0: the kernel has none

    def report(self) -> dict[str, object]:
        """How the sandbox stands, as /readyz, each plugin's detail and the start log say it
        (off is ok, as the operator chose, and says so in `warning`)."""
        report: dict[str, object] = {"ok": self.ok, "mode": self.mode}
        if self.mode == "off":
            report["warning"] = OFF_WARNING
        elif not self.ok:
            report["reason"] = f"no worker starts: {self.reason}"
        else:
            report["landlock"] = (
                f"ABI {self.landlock}" if self.landlock else "not offered by this kernel"
            )
        return report


@dataclass
class Launch:
    """One sandboxed start: the command, the descriptors it inherits, its cgroup."""

    command: list[str]
    pass_fds: tuple[int, ...]
    cgroup: WorkerCgroup
    data_dir: Path  # the plugin's private /data on the host
    data_limit: int  # bytes it may hold (security.sandbox_data_mb)
    _own_fds: list[int] = field(default_factory=list)

    def close_fds(self) -> None:
        """After the start: the child has its copies."""
        for fd in self._own_fds:
            with contextlib.suppress(OSError):
                os.close(fd)
        self._own_fds.clear()

    def run(self, timeout_s: float) -> subprocess.CompletedProcess[bytes]:
        """Run to completion with a minimal environment (the sandbox's own short runs: the
        check, the escape probes), then release. Blocking."""
        try:
            return subprocess.run(
                self.command,
                pass_fds=self.pass_fds,
                env=MINIMAL_ENV,
                capture_output=True,
                timeout=timeout_s,
                check=False,
            )
        finally:
            self.release()

    def release(self) -> None:
        """After the worker ended: kill what is left in its cgroup and remove it."""
        self.close_fds()
        self.cgroup.remove()


def host_paths(root: bool, uid_base: int) -> Host:
    system = tuple(p for p in (*SYSTEM_DIRS, *SYSTEM_FILES) if os.path.exists(p))
    python = tuple(dict.fromkeys((sys.base_prefix, sys.prefix)))
    return Host(system=system, python=python, sdk=SDK_DIR, root=root, uid_base=uid_base)


class Sandbox:
    def __init__(self, settings: SecurityConfig, data_dir: Path) -> None:
        self.settings = settings
        self.data_dir = data_dir
        self.host = host_paths(os.geteuid() == 0, settings.sandbox_uid_base)
        # fail closed: "on" is unusable until check() has proven it works
        self.status = SandboxStatus(settings.sandbox, settings.sandbox == "off", "not checked")
        self._count = itertools.count(1)  # next() is atomic: prepare runs in threads
        self.landlock = 0  # the kernel's Landlock ABI, found by check()
        self.uids = UidTable(data_dir / "sandbox-uids.json", settings.sandbox_uid_base)

    @property
    def on(self) -> bool:
        return self.settings.sandbox == "on"

    @property
    def uid_per_plugin(self) -> bool:
        """Workers run as their plugin's own uid (sandbox on, server root)."""
        return self.on and self.host.root

    def check(self) -> SandboxStatus:
        """Whether workers can be sandboxed here: bubblewrap, cgroups and seccomp, tried for
        real by running `true` in a sandbox. Blocking."""
        if not self.on:
            self.status = SandboxStatus("off", True, "sandbox disabled by security.sandbox")
            return self.status
        try:
            self._try()
        except SandboxUnavailable as exc:
            self.status = SandboxStatus("on", False, str(exc))
        else:
            self.status = SandboxStatus("on", True, landlock=self.landlock)
        return self.status

    def _try(self) -> None:
        data = self.data_dir.resolve()
        for source in (*self.host.system, *self.host.python, self.host.sdk):
            if data.is_relative_to(Path(source).resolve()):
                raise SandboxUnavailable(
                    f"the data dir {data} lies inside {source}, which every worker sees: "
                    "choose a data dir outside the Python installation and the package"
                )
        if shutil.which(bwrap.BWRAP) is None:
            raise SandboxUnavailable("bubblewrap (bwrap) is not installed")
        if self.host.root and not os.path.exists(bwrap.SETPRIV):
            raise SandboxUnavailable(f"{bwrap.SETPRIV} (util-linux) is not installed")
        try:
            layout()
            remove_stale()  # what a killed server left
            seccomp.build_filter()
        except (CgroupUnavailable, seccomp.UnsupportedArchitecture) as exc:
            raise SandboxUnavailable(str(exc)) from None
        self.landlock = confine.abi()
        tree = self.data_dir / "plugin-data" / f"{RESERVED}check-tree"
        tree.mkdir(parents=True, exist_ok=True)
        (tree / "check.py").write_text("pass\n")  # Python starts, confined as workers are
        argv = [sys.executable, str(tree / "check.py")]
        done = self.prepare(f"{RESERVED}check", tree, Resources(), argv, checking=True).run(30)
        if done.returncode != 0:
            output = (done.stderr or done.stdout).decode(errors="replace").strip()
            raise SandboxUnavailable(f"bubblewrap failed ({done.returncode}): {output[-300:]}")

    def scratch(self, data_dir: Path) -> Sandbox:
        """The same sandbox (as checked) with its plugins' /data under `data_dir`: the test
        gates' workers never touch a live plugin's data."""
        copy = Sandbox(self.settings, data_dir)
        copy.status, copy.landlock, copy.uids = self.status, self.landlock, self.uids
        return copy

    def uid_of(self, key: str) -> int | None:
        """The uid `key`'s workers run as (None: the server's, in a user namespace). Blocking
        the first time (the assignment is written down)."""
        return self.uids.uid_of(key) if self.uid_per_plugin else None

    def data_dir_of(self, key: str) -> Path:
        return self.data_dir / "plugin-data" / key

    def prepare(
        self,
        key: str,
        tree: Path,
        resources: Resources,
        argv: list[str],
        extra: tuple[Bind, ...] = (),
        *,
        checking: bool = False,
    ) -> Launch:
        """Everything a sandboxed start of `argv` ([python, script, args...]) needs.
        Blocking (mkdir, chown, cgroup). Refused until check() proved the sandbox works
        (`checking`: check() itself)."""
        if not self.on:
            raise SandboxUnavailable("the sandbox is off")
        if not self.status.ok and not checking:
            raise SandboxUnavailable(self.status.reason or "the sandbox was not checked")
        data = self.data_dir_of(key)
        data.mkdir(parents=True, exist_ok=True)
        settings = self.settings
        limits = Limits(
            memory_mb=resources.memory_limit,
            cpus=resources.cpu_limit,
            max_processes=resources.max_processes,
            open_files=settings.sandbox_open_files,
            tmp_mb=settings.sandbox_tmp_mb,
        )
        try:
            uid = self.uids.uid_of(key) if self.host.root else None
        except (UidsExhausted, OSError) as exc:
            raise SandboxUnavailable(f"no uid for {key}: {exc}") from None
        profile = profile_for(key, str(tree), str(data), self.host, limits, extra=extra, uid=uid)
        if profile.uid is not None:
            os.chown(data, profile.uid, profile.uid)
            data.chmod(0o700)
        try:
            group = WorkerCgroup.create(
                f"{key}-{os.getpid()}-{next(self._count)}",
                memory_mb=limits.memory_mb,
                cpus=limits.cpus,
                max_processes=limits.max_processes,
            )
        except (CgroupUnavailable, OSError) as exc:
            raise SandboxUnavailable(f"cannot create the worker's cgroup: {exc}") from None
        try:
            program = seccomp.filter_fd(seccomp.build_filter())
        except (ValueError, OSError, seccomp.UnsupportedArchitecture) as exc:
            group.remove()
            raise SandboxUnavailable(f"cannot build the seccomp filter: {exc}") from None
        # "/x/bench/../.venv/bin/python" names a path that does not exist in the sandbox
        argv = [os.path.normpath(argv[0]), *argv[1:]]
        if self.landlock:
            rules = landlock_rules(profile, (SANDBOX_EGRESS_PORT,))
            # -I -S: nothing but the standard library runs before Landlock is on (no
            # PYTHONPATH, no site-packages, no sitecustomize); confine.py adds them after
            argv = [argv[0], "-I", "-S", CONFINE, msgspec.json.encode(rules).decode(), *argv[1:]]
        command = bwrap.command(profile, argv, seccomp_fd=program, cgroup_procs=group.procs_files)
        limit = settings.sandbox_data_mb * 2**20
        return Launch(command, (program,), group, data, limit, [program])


PROBES = str(Path(__file__).resolve().parent / "probes.py")


class ProbeResult(msgspec.Struct, frozen=True):
    probe: str
    escaped: bool
    detail: str


def escape_probes(
    sandbox: Sandbox, key: str, tree: Path, resources: Resources, port: int
) -> list[ProbeResult]:
    """Run the built-in escape probes (probes.py) in `key`'s own sandbox, as the plugin's code
    would run: its tree, its limits, its seccomp filter. Blocking; the security gate fails
    closed if any probe got through or the probes could not run."""
    data = sandbox.data_dir
    args = {
        "secrets": [str(data / name) for name in ("admin.token", "stream.secret", "pentarun.db")],
        "writable": [str(data / "escape-probe"), str(tree / "escape-probe")],
        "own": str(tree / "worker" / "plugin_worker.py"),
        "server_pid": os.getpid(),
        "port": port,
        "max_processes": resources.max_processes,
        "landlock": sandbox.landlock >= confine.NET_ABI,  # TCP rules came with ABI 4
    }
    argv = [sys.executable, PROBES, msgspec.json.encode(args).decode()]
    done = sandbox.prepare(f"{RESERVED}probes-{key}", tree, resources, argv).run(60)
    try:
        return msgspec.json.decode(done.stdout, type=list[ProbeResult])
    except msgspec.DecodeError:
        output = (done.stderr or done.stdout).decode(errors="replace")[-300:]
        return [ProbeResult("the escape probes ran", True, f"exit {done.returncode}: {output}")]


def disk_usage(path: Path, stop_above: int) -> int:
    """Bytes allocated under `path` (sparse files count what they use), without following
    links; stops counting once past `stop_above`. Blocking."""
    total, pending = 0, [str(path)]
    while pending and total <= stop_above:
        try:
            entries = list(os.scandir(pending.pop()))
        except OSError:
            continue
        for entry in entries:
            try:
                info = entry.stat(follow_symlinks=False)
            except OSError:
                continue
            total += info.st_blocks * 512
            if entry.is_dir(follow_symlinks=False):
                pending.append(entry.path)
    return total
