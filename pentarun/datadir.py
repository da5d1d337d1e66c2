"""One server per data dir: an exclusive lock held for the server's whole life.

    with lock_data_dir(path): ...      # raises DataDirLocked at once if another server holds it

The lock is `flock` on `<data_dir>/pentarun.lock`: the kernel drops it when the holder dies,
even by SIGKILL, so a crashed server never leaves a stale lock. A second server takes it before
it opens the store, writes a token or binds a port, so a refused start touches nothing.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
from collections.abc import Iterator
from pathlib import Path

from .errors import Conflict

LOCK_FILE = "pentarun.lock"


class DataDirLocked(Conflict):
    code = "data_dir_locked"


def _holder(data_dir: Path) -> str:
    """Who holds the lock, from run.json (read only), for the message."""
    try:
        pid = json.loads((data_dir / "run.json").read_text()).get("pid")
    except (OSError, ValueError, AttributeError):
        return "another pentarun server"
    return f"another pentarun server (pid {pid})"


@contextlib.contextmanager
def lock_data_dir(data_dir: Path) -> Iterator[None]:
    data_dir.mkdir(parents=True, exist_ok=True)
    fd = os.open(data_dir / LOCK_FILE, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise DataDirLocked(
                f"the data dir {data_dir} is in use by {_holder(data_dir)}; "
                "stop it or choose another --data-dir",
                {"data_dir": str(data_dir)},
            ) from None
        yield
    finally:
        os.close(fd)  # closing the descriptor releases the lock
