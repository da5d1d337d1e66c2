"""Worker processes: spawn with a socketpair channel, stop gracefully, collect output.

The worker gets its end of a Unix socketpair as fd `PENTARUN_IPC_FD` (never stdin/stdout); its
stdout and stderr share one pipe that the actor reads line by line. The parent closes its copy
of the child's end at once, so the channel sees EOF when the worker dies. Workers run in their
own session, so a Ctrl-C meant for the server does not hit them before a graceful stop. They
do not inherit the server's environment: only a few neutral variables, the path to the SDK,
and their spec's own.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import trio

from ..ipc.env import IPC_FD_ENV, MAX_FRAME_ENV
from ..packages.manifest import Resources
from ..sandbox.launcher import Launch, Sandbox
from ..sandbox.profile import Bind

ENTRYPOINT = Path("worker") / "plugin_worker.py"
MAX_LINE = 4096
INHERITED_ENV = ("PATH", "LANG", "LC_ALL", "LC_CTYPE", "TZ", "TMPDIR")
# The directory holding the `pentarun` package, so `import pentarun.sdk` works in any worker.
SDK_PATH = str(Path(__file__).resolve().parents[2])


def worker_environment(spec: WorkerSpec, ipc_fd: int, max_frame: int) -> dict[str, str]:
    env = {name: os.environ[name] for name in INHERITED_ENV if name in os.environ}
    env.update(spec.env)
    env.update(
        {
            IPC_FD_ENV: str(ipc_fd),
            MAX_FRAME_ENV: str(max_frame),
            "PYTHONUNBUFFERED": "1",
            # no user site: a .pth a plugin planted in ~/.local (its /data) would run at every
            # start, outside what the integrity check covers
            "PYTHONNOUSERSITE": "1",
            "PYTHONPATH": os.pathsep.join(p for p in (SDK_PATH, spec.env.get("PYTHONPATH")) if p),
            "HOME": str(spec.root),
        }
    )
    return env


@dataclass(frozen=True)
class WorkerSpec:
    """How to start one plugin's worker."""

    key: str
    root: Path
    python: str = sys.executable
    env: dict[str, str] = field(default_factory=dict)
    memory_limit_mb: int | None = None  # resident memory above this kills the worker

    @property
    def entrypoint(self) -> Path:
        return self.root / ENTRYPOINT


@dataclass
class Spawned:
    process: trio.Process
    channel_stream: trio.SocketStream
    output: trio.lowlevel.FdStream
    launch: Launch | None = None  # the sandbox's part (its cgroup); None when unsandboxed


async def spawn(
    spec: WorkerSpec,
    max_frame: int,
    sandbox: Sandbox | None = None,
    *,
    resources: Resources | None = None,
    extra_env: dict[str, str] | None = None,
    extra_binds: tuple[Bind, ...] = (),
) -> Spawned:
    """Start the worker, in `sandbox` unless it is None (`security.sandbox = "off"`); raises
    SandboxUnavailable when the sandbox cannot be set up (nothing starts)."""
    argv = [spec.python, str(spec.entrypoint)]
    launch = None
    if sandbox is not None:
        launch = await trio.to_thread.run_sync(
            sandbox.prepare, spec.key, spec.root, resources or Resources(), argv, extra_binds
        )
    parent, child = socket.socketpair()
    out_read, out_write = os.pipe()
    env = {**worker_environment(spec, child.fileno(), max_frame), **(extra_env or {})}
    try:
        process = await trio.lowlevel.open_process(
            argv if launch is None else launch.command,
            cwd=str(spec.root),
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=out_write,
            stderr=out_write,
            pass_fds=(child.fileno(), *(launch.pass_fds if launch else ())),
            start_new_session=True,
        )
    except BaseException:
        parent.close()
        os.close(out_read)
        if launch is not None:
            with trio.CancelScope(shield=True):
                await trio.to_thread.run_sync(launch.release)
        raise
    finally:
        child.close()
        os.close(out_write)
        if launch is not None:
            launch.close_fds()
    stream = trio.SocketStream(trio.socket.from_stdlib_socket(parent))
    return Spawned(process, stream, trio.lowlevel.FdStream(out_read), launch)


async def read_lines(stream: trio.lowlevel.FdStream, on_line: Callable[[str], None]) -> None:
    """Call `on_line` for each line of output until EOF; over-long lines are cut."""
    pending = b""
    async with stream:
        while True:
            try:
                data = await stream.receive_some(65536)
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                data = b""
            if not data:
                if pending:
                    on_line(pending[:MAX_LINE].decode(errors="replace"))
                return
            pending += data
            *lines, pending = pending.split(b"\n")
            for line in lines:
                on_line(line[:MAX_LINE].decode(errors="replace").rstrip("\r"))
            if len(pending) > MAX_LINE:
                on_line(pending[:MAX_LINE].decode(errors="replace"))
                pending = b""


async def terminate(
    process: trio.Process,
    request_stop: Callable[[], None] | None,
    grace_s: float,
    signal_all: Callable[[int], None] | None = None,
) -> None:
    """Graceful request (if given), then SIGTERM, then SIGKILL; each step waits `grace_s`.
    `signal_all` (a sandboxed worker's cgroup) reaches every process of the worker, where a
    process-group signal reaches only the sandbox's outer process."""
    if request_stop is not None:
        request_stop()
        with trio.move_on_after(grace_s):
            await process.wait()
            return
    for sig in (signal.SIGTERM, signal.SIGKILL):
        if process.returncode is not None:
            return
        if signal_all is not None and sig == signal.SIGTERM:
            await trio.to_thread.run_sync(signal_all, sig)
        else:
            _signal_group(process, sig)
        with trio.move_on_after(grace_s if sig == signal.SIGTERM else 30):
            await process.wait()
            return


def kill_now(process: trio.Process) -> None:
    if process.returncode is None:
        _signal_group(process, signal.SIGKILL)


def _signal_group(process: trio.Process, sig: signal.Signals) -> None:
    """Signal the worker's whole session, so children it started die with it."""
    try:
        os.killpg(process.pid, sig)
    except (ProcessLookupError, PermissionError):
        with contextlib.suppress(ProcessLookupError):
            process.send_signal(sig)
