"""A plugin with no scopes that tries every way around the lanes (tests/e2e/test_sandbox.py).

`escape` runs one probe and answers {"escaped": bool, "detail": str}: escaped means the probe
reached what the sandbox must keep from it.
"""

import ctypes
import errno
import os
import socket
import subprocess
import sys
import threading
import time

from pentarun.sdk import Context, Plugin

plugin = Plugin()
libc = ctypes.CDLL(None, use_errno=True)


def _read(path: str) -> tuple[bool, str]:
    try:
        with open(path, "rb") as handle:
            return True, f"read {len(handle.read(64))} bytes of {path}"
    except OSError as exc:
        return False, f"{path}: {exc}"


def _write(path: str) -> tuple[bool, str]:
    try:
        with open(path, "ab") as handle:
            handle.write(b"\n# tampered\n")
        return True, f"wrote {path}"
    except OSError as exc:
        return False, f"{path}: {exc}"


def _connect(host: str, port: int) -> tuple[bool, str]:
    try:
        with socket.create_connection((host, port), timeout=2):
            return True, f"connected to {host}:{port}"
    except OSError as exc:
        return False, f"{host}:{port}: {exc}"


def _syscall_refused(name: str, *args: int) -> tuple[bool, str]:
    result = getattr(libc, name)(*args)
    error = ctypes.get_errno()
    return result == 0, f"{name} -> {result} ({errno.errorcode.get(error, error)})"


def _fork_bomb(count: int) -> tuple[bool, str]:
    started, refused = [], 0
    for _ in range(count):
        try:
            started.append(subprocess.Popen(["/bin/sleep", "30"]))
        except OSError:
            refused += 1
    for child in started:
        child.kill()
        child.wait()
    return refused == 0, f"{len(started)} started, {refused} refused"


def _orphan(marker: str) -> tuple[bool, str]:
    """A child in its own session, left running: it must die with the worker."""
    # the shell stays (sleep is its child), its command line carries the marker
    subprocess.Popen(["/bin/sh", "-c", f"sleep 300; : {marker}"], start_new_session=True)
    return False, "left a child running"


def _burn(seconds: float) -> tuple[bool, str]:
    def spin() -> None:
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            pass

    threads = [threading.Thread(target=spin) for _ in range(2)]
    start_cpu, start = time.process_time(), time.monotonic()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    share = (time.process_time() - start_cpu) / (time.monotonic() - start)
    return False, f"{share:.2f}"


def _fill(megabytes: int) -> tuple[bool, str]:
    with open("/data/fill", "wb") as handle:
        for _ in range(megabytes):
            handle.write(os.urandom(2**20))
    return True, f"wrote {megabytes} MB to /data"


def _hog(megabytes: int) -> tuple[bool, str]:
    blocks = [bytearray(2**20) for _ in range(megabytes)]
    return True, f"held {len(blocks)} MB"


@plugin.handler("escape")
async def escape(ctx: Context, params: dict) -> dict:
    escaped, detail = _probe(params["probe"], params.get("arg"))
    return {"escaped": escaped, "detail": detail}


def _limits() -> tuple[bool, str]:
    import resource  # noqa: PLC0415

    core = resource.getrlimit(resource.RLIMIT_CORE)
    files = resource.getrlimit(resource.RLIMIT_NOFILE)
    with open("/proc/self/status") as handle:
        no_new_privs = "NoNewPrivs:\t1" in handle.read()
    escaped = core != (0, 0) or files[1] > 4096 or not no_new_privs
    return escaped, f"core={core} nofile={files} no_new_privs={no_new_privs}"


def _probe(probe: str, arg: object) -> tuple[bool, str]:
    match probe:
        case "read":
            escaped, detail = _read(arg)
        case "write":
            escaped, detail = _write(arg)
        case "own_code":
            escaped, detail = _write(os.path.abspath(sys.argv[0]))
        case "signal":
            try:
                os.kill(int(arg), 0)
                escaped, detail = True, f"may signal {arg}"
            except OSError as exc:
                escaped, detail = False, str(exc)
        case "connect":
            escaped, detail = _connect("127.0.0.1", int(arg))
        case "interfaces":
            names = [name for _, name in socket.if_nameindex()]
            escaped, detail = names != ["lo"], ",".join(names)
        case "unshare":
            escaped, detail = _syscall_refused("unshare", 0x10000000)  # CLONE_NEWUSER
        case "mount":
            escaped, detail = _syscall_refused("mount", 0, 0, 0, 0, 0)
        case "ptrace":
            escaped, detail = _syscall_refused("ptrace", 0, 0, 0, 0)  # PTRACE_TRACEME
        case "uid":
            escaped, detail = os.getuid() == 0 or os.geteuid() == 0, str(os.getuid())
        case "proc":
            pids = [p for p in os.listdir("/proc") if p.isdigit()]
            escaped, detail = len(pids) > 10, f"{len(pids)} processes visible"
        case "limits":
            escaped, detail = _limits()
        case "fork_bomb":
            escaped, detail = _fork_bomb(int(arg))
        case "orphan":
            escaped, detail = _orphan(arg)
        case "burn":
            escaped, detail = _burn(float(arg))
        case "fill":
            escaped, detail = _fill(int(arg))
        case "hog":
            escaped, detail = _hog(int(arg))
        case _:
            raise ValueError(probe)
    return escaped, detail


if __name__ == "__main__":
    plugin.run()
