"""A worker's cgroup: its memory limit, CPU quota and process limit, its usage, and the kill of
every process in it (I/O on the cgroup filesystem).

    group = WorkerCgroup.create(root, name, memory_mb, cpus, max_processes)
    group.procs_files          # where the worker's launcher writes its own pid (bwrap.py)
    group.kill_all(); group.remove()

Both layouts are handled: cgroup v2 (one unified hierarchy: memory.max, cpu.max, pids.max,
cgroup.kill) and v1 (one hierarchy per controller: memory, cpu, pids, freezer; killing freezes
the group first so nothing forks while it is being killed). A v1 memory cgroup's OOM kills are
counted in memory.oom_control; v2's in memory.events.
"""

from __future__ import annotations

import contextlib
import os
import signal
import time
from dataclasses import dataclass, field
from pathlib import Path

CGROUP_ROOT = Path("/sys/fs/cgroup")
PERIOD_US = 100_000
V1_CONTROLLERS = ("memory", "cpu", "cpuacct", "pids", "freezer")


class CgroupUnavailable(Exception):
    """The cgroup controllers a sandbox needs are not there or not writable."""


def _write(path: Path, value: str) -> None:
    path.write_text(value)


def _read(path: Path) -> str:
    try:
        return path.read_text()
    except OSError:
        return ""


def _field(text: str, name: str) -> int | None:
    """The value of `name` in a flat-keyed cgroup file ("name value" lines)."""
    for line in text.splitlines():
        key, _, value = line.partition(" ")
        if key == name:
            return int(value)
    return None


def layout(root: Path = CGROUP_ROOT) -> str:
    """ "v2" for a unified hierarchy with the controllers we need, "v1" for per-controller
    hierarchies, else CgroupUnavailable saying what is missing."""
    controllers = _read(root / "cgroup.controllers").split()
    if {"memory", "cpu", "pids"} <= set(controllers):
        return "v2"
    missing = [c for c in V1_CONTROLLERS if not (root / c / "cgroup.procs").is_file()]
    if not missing:
        return "v1"
    raise CgroupUnavailable(
        f"cgroup controllers missing under {root}: {', '.join(missing)} (v1) and no cgroup v2 "
        "hierarchy with memory, cpu and pids"
    )


@dataclass
class WorkerCgroup:
    kind: str
    dirs: dict[str, Path]  # controller (or "unified") -> the worker's directory
    oom_kills_at_start: int = 0
    _removed: bool = field(default=False, repr=False)

    @classmethod
    def create(
        cls,
        name: str,
        *,
        memory_mb: int,
        cpus: float,
        max_processes: int,
        root: Path = CGROUP_ROOT,
        parent: str = "pentarun",
    ) -> WorkerCgroup:
        kind = layout(root)
        quota = max(1000, int(cpus * PERIOD_US))
        memory = str(memory_mb * 2**20)
        if kind == "v2":
            base = root / parent
            base.mkdir(exist_ok=True)
            with contextlib.suppress(OSError):  # let the parent hand the controllers down
                _write(base / "cgroup.subtree_control", "+memory +cpu +pids")
            path = base / name
            path.mkdir()  # a new name per start: two workers never share a group
            _write(path / "memory.max", memory)
            if (path / "memory.swap.max").exists():
                _write(path / "memory.swap.max", "0")
            _write(path / "cpu.max", f"{quota} {PERIOD_US}")
            _write(path / "pids.max", str(max_processes))
            group = cls(kind, {"unified": path})
        else:
            dirs = {c: root / c / parent / name for c in V1_CONTROLLERS}
            for path in dirs.values():
                path.parent.mkdir(parents=True, exist_ok=True)
                path.mkdir()
            _write(dirs["memory"] / "memory.limit_in_bytes", memory)
            with contextlib.suppress(OSError):  # no swap accounting on some kernels
                _write(dirs["memory"] / "memory.memsw.limit_in_bytes", memory)
            _write(dirs["cpu"] / "cpu.cfs_period_us", str(PERIOD_US))
            _write(dirs["cpu"] / "cpu.cfs_quota_us", str(quota))
            _write(dirs["pids"] / "pids.max", str(max_processes))
            group = cls(kind, dirs)
        group.oom_kills_at_start = group.oom_kills()
        return group

    @property
    def procs_files(self) -> list[str]:
        return [str(path / "cgroup.procs") for path in self.dirs.values()]

    def pids(self) -> list[int]:
        path = self.dirs.get("unified") or self.dirs["pids"]
        return [int(p) for p in _read(path / "cgroup.procs").split()]

    def oom_kills(self) -> int:
        """How many processes the kernel killed for the memory limit."""
        path = self.dirs.get("unified") or self.dirs["memory"]
        text = _read(path / ("memory.events" if self.kind == "v2" else "memory.oom_control"))
        return _field(text, "oom_kill") or 0

    def memory_bytes(self) -> int | None:
        path = self.dirs.get("unified") or self.dirs["memory"]
        text = _read(path / ("memory.current" if self.kind == "v2" else "memory.usage_in_bytes"))
        return int(text) if text.strip() else None

    def cpu_seconds(self) -> float | None:
        if self.kind == "v2":
            usec = _field(_read(self.dirs["unified"] / "cpu.stat"), "usage_usec")
            return None if usec is None else usec / 1e6
        text = _read(self.dirs["cpuacct"] / "cpuacct.usage")
        return int(text) / 1e9 if text.strip() else None

    def throttled(self) -> int:
        """How many CPU periods the quota throttled the worker in."""
        path = self.dirs.get("unified") or self.dirs["cpu"]
        return _field(_read(path / "cpu.stat"), "nr_throttled") or 0

    def pids_refused(self) -> int:
        """How many forks the process limit refused."""
        path = self.dirs.get("unified") or self.dirs["pids"]
        return _field(_read(path / "pids.events"), "max") or 0

    def signal_all(self, sig: int) -> None:
        """Send `sig` to every process of the worker (SIGTERM: a chance to end cleanly for
        what runs inside the sandbox's own session, which a process-group signal misses)."""
        for pid in self.pids():
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, sig)

    def kill_all(self, timeout_s: float = 2.0) -> None:
        """SIGKILL every process of the worker, including those it forked or setsid'd."""
        if self.kind == "v2" and (self.dirs["unified"] / "cgroup.kill").exists():
            with contextlib.suppress(OSError):
                _write(self.dirs["unified"] / "cgroup.kill", "1")
        else:
            freezer = self.dirs.get("freezer")
            if freezer is not None:
                with contextlib.suppress(OSError):
                    _write(freezer / "freezer.state", "FROZEN")
            for pid in self.pids():
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            if freezer is not None:
                with contextlib.suppress(OSError):
                    _write(freezer / "freezer.state", "THAWED")
        deadline = time.monotonic() + timeout_s
        while self.pids() and time.monotonic() < deadline:
            time.sleep(0.01)

    def remove(self) -> None:
        """Kill what is left and remove the directories (idempotent)."""
        if self._removed:
            return
        self.kill_all()
        for path in self.dirs.values():
            with contextlib.suppress(OSError):
                path.rmdir()
        self._removed = True


def _owner_alive(name: str) -> bool:
    """Whether the server that named a cgroup `<key>-<server pid>-<n>` still runs."""
    parts = name.rsplit("-", 2)
    return len(parts) == 3 and parts[1].isdigit() and Path(f"/proc/{parts[1]}").exists()


def remove_stale(root: Path = CGROUP_ROOT, parent: str = "pentarun") -> int:
    """Remove the empty worker cgroups of servers that are gone; returns how many."""
    removed = 0
    bases = [root / parent, *(root / c / parent for c in V1_CONTROLLERS)]
    for base in bases:
        if not base.is_dir():
            continue
        for group in base.iterdir():
            if _owner_alive(group.name):
                continue
            if not group.is_dir():
                continue
            for pid in _read(group / "cgroup.procs").split():  # left running: kill them
                with contextlib.suppress(ProcessLookupError, ValueError):
                    os.kill(int(pid), signal.SIGKILL)
            with contextlib.suppress(OSError):
                group.rmdir()
                removed += 1
    return removed
