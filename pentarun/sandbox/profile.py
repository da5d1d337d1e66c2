"""What a sandboxed worker sees and may use: a pure description, built from the plugin and
the host (SPEC §6). No I/O: the paths of the host are arguments.

    profile_for(key, tree, host, limits) -> SandboxProfile

Read-only: the system's libraries (`host.system`), Python (`host.python`), the SDK, and the
plugin's own install tree (with its `site/` dependencies). Writable: a private `/tmp` (a
size-bounded tmpfs) and the plugin's private data dir, mounted at /data. Nothing else: not
the server's data dir, other plugins, the server's /proc (a new pid namespace), the network (a
new network namespace with only its own loopback). The worker runs as its own unprivileged uid
per plugin where the server is root (`plugin_uid`), in a user namespace otherwise.
"""

from __future__ import annotations

import hashlib
from pathlib import PurePosixPath

import msgspec

DATA = "/data"  # the plugin's private, persistent data dir inside the sandbox
SANDBOX_UID = 1000  # the worker's uid inside a user namespace (server not root)


class Bind(msgspec.Struct, frozen=True):
    source: str
    target: str
    writable: bool = False


class Limits(msgspec.Struct, frozen=True):
    memory_mb: int
    cpus: float
    max_processes: int
    open_files: int
    tmp_mb: int


class Host(msgspec.Struct, frozen=True):
    """The host's paths a worker needs (read-only) and whether the server runs as root."""

    system: tuple[str, ...]  # e.g. /usr, /lib, /lib64, /bin, and a few files of /etc
    python: tuple[str, ...]  # the interpreter's prefix and the virtualenv's
    sdk: str  # the directory of the `pentarun` package
    root: bool
    uid_base: int = 200_000


class SandboxProfile(msgspec.Struct, frozen=True):
    key: str
    binds: tuple[Bind, ...]
    limits: Limits
    workdir: str
    uid: int | None  # the host uid the worker runs as; None: a user namespace instead
    env: dict[str, str] = {}


UID_SPAN = 1 << 16


def plugin_uid(key: str, base: int) -> int:
    """A stable unprivileged uid for a plugin (Android's per-app uid): `base` + a hash of the
    key within 65,536, so two plugins share one only by a hash collision (1 in 65,536)."""
    digest = hashlib.sha256(key.encode()).digest()
    return base + int.from_bytes(digest[:4], "big") % UID_SPAN


def profile_for(
    key: str,
    tree: str,
    data_dir: str,
    host: Host,
    limits: Limits,
    *,
    extra: tuple[Bind, ...] = (),
    uid: int | None = None,
) -> SandboxProfile:
    """The sandbox of plugin `key` whose install tree is `tree` and private data dir
    `data_dir` (a host path, mounted read-write at /data); `extra` binds (e.g. its egress
    socket) come last. `uid`: the plugin's own (uids.py), when the host is root; its hashed
    uid when not given."""
    binds = [Bind(path, path) for path in (*host.system, *host.python)]
    binds.append(Bind(host.sdk, host.sdk))
    binds.append(Bind(tree, tree))
    binds.append(Bind(data_dir, DATA, writable=True))
    binds.extend(extra)
    return SandboxProfile(
        key=key,
        binds=tuple(_without_duplicates(binds)),
        limits=limits,
        workdir=tree,
        uid=(plugin_uid(key, host.uid_base) if uid is None else uid) if host.root else None,
        env={"HOME": DATA, "TMPDIR": "/tmp"},
    )


class LandlockRules(msgspec.Struct, frozen=True):
    """What confine.py lets the worker reach once Landlock is on (paths inside the sandbox)."""

    read: tuple[str, ...]
    write: tuple[str, ...]
    devices: tuple[str, ...]
    ports: tuple[int, ...]


def landlock_rules(profile: SandboxProfile, ports: tuple[int, ...]) -> LandlockRules:
    """Exactly what the mounts give, again: read-only binds and /proc readable, writable binds
    and /tmp writable, the device files of /dev readable and writable (no ioctl, no new nodes),
    TCP only on `ports` (the egress relay's)."""
    read = [b.target for b in profile.binds if not b.writable] + ["/proc"]
    write = ["/tmp"] + [b.target for b in profile.binds if b.writable]
    return LandlockRules(tuple(read), tuple(write), ("/dev",), ports)


def _without_duplicates(binds: list[Bind]) -> list[Bind]:
    """One bind per target; a path inside another read-only bind is already visible."""
    kept: list[Bind] = []
    for bind in binds:
        inside = any(
            not other.writable
            and not bind.writable
            and PurePosixPath(bind.target).is_relative_to(other.target)
            and bind.source == bind.target
            and other.source == other.target
            for other in kept
        )
        if not inside and all(other.target != bind.target for other in kept):
            kept.append(bind)
    return kept
