"""Integrity at every start: an installed tree is re-hashed against what was recorded at
install before any worker runs from it; a difference names every file (changed, missing,
extra).

What a tree must hold (`ExpectedTree`), both from the install row, never from the tree:
- `files`: plugin.id's hashes as uploaded (`file_hashes`), checked against the package then;
- `site`: `site/` (the requirements pip installed) hashed right after pip ran (`site_hashes`);
  `{}` when there are none (a `site/` that appears later is extra: the worker would put it
  on its path), None for installs made before site manifests were recorded (`site/` is then
  not checked; reinstall to cover it).
Everything else in the tree is extra, `__pycache__` included (a planted .pyc runs code
plugin.id never saw; workers run with PYTHONDONTWRITEBYTECODE, so none appear), except
`plugin.id` itself (never executed; the row's copy is the trusted one). Symbolic links are
never followed: a link where a file was is a change. Directories themselves are not compared.

Cost: a stat per file when nothing changed. `DigestCache` keeps, per inode (st_dev, st_ino),
the (st_size, st_mtime_ns, st_ctime_ns) seen when the file was hashed and the digest; a file
whose stat still matches is not read again. The kernel sets ctime to "now" on every write,
truncate, chmod, rename and utime, and no unprivileged call can set it back, so restoring
size and mtime (`os.utime`) after a change still changes the key and the file is re-hashed;
a new file that reuses an inode number has a new ctime too. Timestamps are coarse (a clock
tick, or a second on some filesystems), so a file changed within `racy_ns` (2 s) of being
hashed is not cached (git's "racily clean" rule): a change in the same tick as the hashing
would otherwise keep its old ctime. A file that changes while it is read is not cached.
Residual risk: whoever can set ctime can forge a match — root (setting the clock back, or
writing the block device) or a filesystem without real ctimes (FAT, some network mounts);
such a writer can also rewrite the database. The check is at start: a writer racing the start
is the sandbox's job (the tree is mounted read-only for the worker).

All hashing runs off the trio thread (`trio.to_thread`). `Integrity.verify_before_start(key,
tree)` is the check a start path calls (workers.py; the supervisor's restarts are given the
same callable): it finds the install row of `tree` itself, so a source tree (`--plugin-dir`,
outside the data dir) is not checked. A tree beneath `installed_root` (<data>/plugins) with no
install row of its own is refused (fail closed: nothing says what it should hold).
"""

from __future__ import annotations

import hashlib
import io
import os
import stat
import threading
import time
from collections.abc import Awaitable, Callable, Iterable
from pathlib import Path

import msgspec
import trio

from ..store import records
from ..store.db import Database
from .identity import FILE as PLUGIN_ID
from .problems import Problem

SITE = "site"
RACY_NS = 2_000_000_000
MAX_ENTRIES = 200_000
MAX_EVIDENCE = 100  # file names of each kind kept in an event or audit row

Hasher = Callable[[io.BufferedReader], str]
# what a start path (and the supervisor, for restarts) calls before a worker starts
StartCheck = Callable[[str, Path], Awaitable[list[Problem]]]


def sha256_of(file: io.BufferedReader) -> str:
    return hashlib.file_digest(file, "sha256").hexdigest()


class ExpectedTree(msgspec.Struct, frozen=True):
    files: dict[str, str]  # plugin.id: relative path -> sha256
    site: dict[str, str] | None = {}  # site/ (relative to it); None: not recorded, not checked

    def hashes(self) -> dict[str, str]:
        """Every expected file, relative to the tree (plugin.id wins where both name one)."""
        site = {f"{SITE}/{name}": digest for name, digest in (self.site or {}).items()}
        return {**site, **self.files}


class TreeDiff(msgspec.Struct, frozen=True):
    """The evidence of a failed check: which files differ."""

    changed: list[str] = []
    missing: list[str] = []
    extra: list[str] = []


CHANGED, MISSING, EXTRA = "integrity.changed", "integrity.missing", "integrity.extra"
UNRECORDED = "integrity.unrecorded"  # an installed tree no install row describes


def diff_of(problems: Iterable[Problem]) -> TreeDiff:
    found: dict[str, list[str]] = {CHANGED: [], MISSING: [], EXTRA: []}
    for problem in problems:
        found.setdefault(problem.code, []).append(problem.path)
    return TreeDiff(found[CHANGED], found[MISSING], found[EXTRA])


def summary(problems: list[Problem], shown: int = 5) -> str:
    """`changed worker/plugin_worker.py; extra x.py` (the first `shown`, then a count)."""
    parts = [
        p.message if p.code == UNRECORDED else f"{p.code.removeprefix('integrity.')} {p.path}"
        for p in problems[:shown]
    ]
    if len(problems) > shown:
        parts.append(f"and {len(problems) - shown} more")
    return "; ".join(parts)


class DigestCache:
    """Inode -> (size, mtime_ns, ctime_ns, digest); safe to share between threads."""

    def __init__(
        self,
        hasher: Hasher = sha256_of,
        *,
        racy_ns: int = RACY_NS,
        max_entries: int = MAX_ENTRIES,
        clock: Callable[[], int] = time.time_ns,
    ) -> None:
        self.hasher = hasher
        self.racy_ns = racy_ns
        self.max_entries = max_entries
        self.clock = clock
        self._entries: dict[tuple[int, int], tuple[int, int, int, str]] = {}
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._entries)

    def digest(self, path: Path, st: os.stat_result) -> str:
        """The digest of the entry at `path`, whose lstat is `st` (blocking)."""
        if stat.S_ISLNK(st.st_mode):
            return "symlink:" + hashlib.sha256(os.fsencode(os.readlink(path))).hexdigest()
        if not stat.S_ISREG(st.st_mode):
            return f"special:{stat.S_IFMT(st.st_mode):o}"
        inode = (st.st_dev, st.st_ino)
        with self._lock:
            cached = self._entries.get(inode)
        if cached is not None and cached[:3] == (st.st_size, st.st_mtime_ns, st.st_ctime_ns):
            return cached[3]
        return self._hash(path)

    def _hash(self, path: Path) -> str:
        started = self.clock()
        flags = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
        try:
            fd = os.open(path, flags)
        except OSError as exc:  # replaced by a link or removed since the scan
            return f"unreadable:{exc.errno}"
        with open(fd, "rb") as file:
            before = os.fstat(fd)
            if not stat.S_ISREG(before.st_mode):
                return f"special:{stat.S_IFMT(before.st_mode):o}"
            digest = self.hasher(file)
            after = os.fstat(fd)
        key = (before.st_size, before.st_mtime_ns, before.st_ctime_ns)
        steady = key == (after.st_size, after.st_mtime_ns, after.st_ctime_ns)
        if steady and before.st_ctime_ns < started - self.racy_ns:
            with self._lock:
                self._entries[(before.st_dev, before.st_ino)] = (*key, digest)
                if len(self._entries) > self.max_entries:
                    for old in list(self._entries)[: len(self._entries) // 4]:
                        del self._entries[old]
        return digest


def scan(root: Path) -> dict[str, os.stat_result]:
    """Every entry under `root` that is not a directory, by relative POSIX path, with its
    lstat (symbolic links are entries, never followed)."""
    found: dict[str, os.stat_result] = {}
    pending = [(root, "")]
    while pending:
        directory, prefix = pending.pop()
        with os.scandir(directory) as entries:
            for entry in entries:
                rel = prefix + entry.name
                if entry.is_dir(follow_symlinks=False):
                    pending.append((Path(entry.path), rel + "/"))
                else:
                    found[rel] = entry.stat(follow_symlinks=False)
    return found


def check_tree(tree: Path, expected: ExpectedTree, cache: DigestCache) -> list[Problem]:
    """Compare `tree` with what it must hold (blocking; run it in a thread)."""
    try:
        top = os.lstat(tree)
    except FileNotFoundError:
        return [Problem(MISSING, ".", "the installed tree is missing")]
    if not stat.S_ISDIR(top.st_mode):
        return [Problem(CHANGED, ".", "the installed tree is not a directory")]
    try:
        present = scan(tree)
    except OSError as exc:  # fail closed: what cannot be read cannot be vouched for
        return [Problem(CHANGED, ".", f"the installed tree could not be read: {exc}")]
    present.pop(PLUGIN_ID, None)
    hashes = expected.hashes()
    problems = []
    for name in sorted(set(hashes) | set(present)):
        if name not in present:
            problems.append(Problem(MISSING, name, "missing from the installed tree"))
        elif name not in hashes:
            if expected.site is None and name.startswith(f"{SITE}/"):
                continue  # installed before site/ was recorded
            problems.append(Problem(EXTRA, name, "not installed with the plugin"))
        elif cache.digest(tree / name, present[name]) != hashes[name]:
            problems.append(Problem(CHANGED, name, "changed after installation"))
    return problems


def hash_site(tree: Path, cache: DigestCache) -> dict[str, str]:
    """The manifest of `tree/site` (relative to it), `{}` without one (blocking)."""
    site = tree / SITE
    if not site.is_dir() or site.is_symlink():
        return {}
    return {name: cache.digest(site / name, st) for name, st in sorted(scan(site).items())}


def expected_of(row: records.InstallRow) -> ExpectedTree:
    """What an install's tree must hold, from its row."""
    site = row.site_hashes
    if site is None and not (row.approval and row.approval.requirements):
        site = {}  # installed before site manifests, without requirements: no site/ at all
    return ExpectedTree(dict(row.file_hashes), None if site is None else dict(site))


class Integrity:
    """The checks with their shared cache; `db` finds the install row of a tree; every tree
    beneath `installed_root` must have one."""

    def __init__(
        self,
        db: Database | None = None,
        cache: DigestCache | None = None,
        *,
        installed_root: Path | None = None,
    ) -> None:
        self.db = db
        self.cache = cache if cache is not None else DigestCache()
        self.installed_root = None if installed_root is None else installed_root.absolute()

    async def verify(self, tree: Path, expected: ExpectedTree) -> list[Problem]:
        return await trio.to_thread.run_sync(check_tree, tree, expected, self.cache)

    async def verify_before_start(
        self, key: str, tree: Path, expected: ExpectedTree | None = None
    ) -> list[Problem]:
        """Problems of `key`'s installed `tree`; [] when it is not an installed tree (a
        source tree) or nothing differs."""
        if expected is None:
            row = self._install_of(key, tree)
            if row is None:
                if self._installed(tree):
                    return [Problem(UNRECORDED, ".", "an installed tree with no install record")]
                return []
            expected = expected_of(row)
        return await self.verify(tree, expected)

    async def record_site(self, tree: Path) -> dict[str, str]:
        return await trio.to_thread.run_sync(hash_site, tree, self.cache)

    def _installed(self, tree: Path) -> bool:
        """Whether `tree` lies beneath the installed root (a path comparison: no I/O)."""
        root = self.installed_root
        return root is not None and Path(os.path.abspath(tree)).is_relative_to(root)

    def _install_of(self, key: str, tree: Path) -> records.InstallRow | None:
        """The install whose tree `tree` is (<data>/plugins/<key>/<install id>)."""
        if self.db is None or tree.parent.name != key:
            return None
        row = records.get_install(self.db, tree.name)
        return row if row is not None and row.plugin_key == key else None


def evidence(problems: list[Problem]) -> dict[str, object]:
    """The JSON evidence of a failed check (for events and the audit log): the files of each
    kind (the first `MAX_EVIDENCE`) and how many there are."""
    diff = diff_of(problems)
    kinds = {"changed": diff.changed, "missing": diff.missing, "extra": diff.extra}
    return {
        **{kind: names[:MAX_EVIDENCE] for kind, names in kinds.items()},
        "counts": {kind: len(names) for kind, names in kinds.items()},
        "unrecorded": any(p.code == UNRECORDED for p in problems),
    }


def record_failure(
    db: Database, key: str, install_id: str, before: str, problems: list[Problem]
) -> str:
    """Record a failed check with its evidence (a plugin event and an audit row); returns
    the reason (naming the first files) for the plugin's record."""
    reason = f"integrity check before {before} failed: the tree differs from what was installed: "
    reason += summary(problems)
    detail: dict[str, object] = {"install": install_id, "before": before, **evidence(problems)}
    records.record_event(db, key, "integrity_failed", reason=reason, detail=detail)
    records.audit(db, "integrity", "plugin.integrity_failed", plugin=key, detail=detail)
    return reason
