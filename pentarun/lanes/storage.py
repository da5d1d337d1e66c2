"""The storage lane: files a plugin keeps through the core (`ctx.storage`), per property.

    storage.put     storage:write  {name, data}    -> {"name", "size"}   409 storage_full
    storage.get     storage:read   {name}          -> bytes, or nil when there is no such file
    storage.list    storage:read   {after, limit}  -> [{"name", "size"}]: a page, in name order
    storage.delete  storage:write  {name}          -> bool: whether the file was there

A sandboxed worker has no other place to keep data across restarts and reinstalls of its
version (its private /data is small and goes with an uninstall too). Files live under
`<root>/<plugin>/<property>/` (root = `<data_dir>/storage`), one flat directory a property: a
name (`calls.STORAGE_NAME_PATTERN`: segments of `[A-Za-z0-9_.-]`, none starting with "." or
"-", joined by "/") becomes a file name by writing each "/" as "~", a character no name holds
(`filename_of`/`name_of`). So no name can leave its directory, every file name is one path
component, and the lane's own files (the temporary files of a write, the `.counted` marker)
start with "." where no name can.

Invariants:
- a call reaches only its own plugin and property (the core checked the property; parameters
  naming another are refused before this lane runs);
- a put is atomic: a temporary file, fsync, rename over the name; a refused or failed put
  leaves the old file (or none) and nothing half-written;
- a put that would take the plugin's files (all properties) past `[storage] quota_mb`, or
  a property past `MAX_FILES` files, is refused before anything is written (409
  `storage_full`, details `used`/`limit`/`needed`); a put that does not grow the plugin
  always works, so a plugin over a lowered quota can still shrink;
- every file operation runs in a worker thread, never on the trio thread; puts and deletes of
  one plugin take its lock, so the running count (`Usage`) is exact. The count is made by one
  scan of the plugin's directory when first needed and kept while the `.counted` marker the
  scan left is there: an uninstall removes the directory, marker and all, and the next put
  counts afresh.
"""

from __future__ import annotations

import contextlib
import errno
import os
import re
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import trio

from ..config import StorageConfig
from ..errors import BadRequest, StorageFull
from .calls import (
    MAX_STORAGE_FILE,
    STORAGE_NAME_PATTERN,
    StorageListParams,
    StorageNameParams,
    StoragePutParams,
    clip,
)
from .request import CoreFn, CoreRequest

MIB = 1024 * 1024
MAX_FILES = 10_000  # files a plugin may hold per property
SEPARATOR = "~"  # a name's "/" in its file name: no name holds it
TEMP_PREFIX = ".tmp-"
MARKER = ".counted"
NAME = re.compile(STORAGE_NAME_PATTERN)
# a property's directory: the admin API's id pattern, so never "." or ".." or a path
SEGMENT = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}\Z")


# --- pure -------------------------------------------------------------------------------------


def filename_of(name: str) -> str:
    """The file name of a valid storage name (one path component)."""
    return name.replace("/", SEPARATOR)


def name_of(filename: str) -> str | None:
    """The storage name a file name holds; None for a file that is not one (the lane's own
    temporary files and marker, anything else found in the directory)."""
    name = filename.replace(SEPARATOR, "/")
    return name if NAME.match(name) else None


def page(files: dict[str, int], after: str, limit: int) -> list[dict[str, Any]]:
    """At most `limit` of `files` (name -> size) in name order, those after `after`."""
    names = sorted(n for n in files if n > after)[:limit]
    return [{"name": n, "size": files[n]} for n in names]


@dataclass
class Usage:
    """What a plugin holds: bytes over all its properties, files per property."""

    bytes: int = 0
    files: dict[str, int] = field(default_factory=dict)


@dataclass(frozen=True)
class Refusal:
    """Why a put is refused: `limit` "bytes" or "files"; `used`, `limit_value`, `needed`."""

    limit: str
    used: int
    limit_value: int
    needed: int


def admit(
    usage: Usage, prop: str, old_size: int | None, size: int, *, quota: int, max_files: int
) -> Refusal | None:
    """None when a put of `size` bytes over a file of `old_size` (None: a new file) may go
    ahead; the refusal otherwise. Growth past `quota` is refused; a new file past `max_files`
    in the property too; what does not grow always goes."""
    if old_size is None and usage.files.get(prop, 0) >= max_files:
        return Refusal("files", usage.files.get(prop, 0), max_files, 1)
    after = usage.bytes - (old_size or 0) + size
    if size > (old_size or 0) and after > quota:
        return Refusal("bytes", usage.bytes, quota, size - (old_size or 0))
    return None


def apply(usage: Usage, prop: str, old_size: int | None, size: int | None) -> None:
    """Count a file of `prop` going from `old_size` to `size` (None: absent)."""
    usage.bytes += (size or 0) - (old_size or 0)
    delta = (size is not None) - (old_size is not None)
    usage.files[prop] = usage.files.get(prop, 0) + delta


# --- file work, run in worker threads -----------------------------------------------------------


def _size(path: Path) -> int | None:
    try:
        return path.stat().st_size
    except FileNotFoundError:
        return None


def _scan(plugin_dir: Path) -> Usage:
    """Count the plugin's files (the caller holds its lock: any temporary file is a leftover
    of a crash, removed here), then leave the marker that keeps the count valid."""
    usage = Usage()
    if plugin_dir.is_dir():
        for prop_dir in plugin_dir.iterdir():
            if not prop_dir.is_dir() or not SEGMENT.match(prop_dir.name):
                continue
            with os.scandir(prop_dir) as entries:
                for entry in entries:
                    if entry.name.startswith(TEMP_PREFIX):
                        with contextlib.suppress(FileNotFoundError):
                            os.unlink(entry.path)
                    elif entry.is_file(follow_symlinks=False) and name_of(entry.name):
                        apply(usage, prop_dir.name, None, entry.stat().st_size)
    plugin_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    (plugin_dir / MARKER).touch()
    return usage


def _write_atomically(path: Path, data: bytes) -> None:
    """`data` under `path`, all or nothing: a temporary file beside it, fsync, rename."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    fd, tmp = tempfile.mkstemp(prefix=TEMP_PREFIX, dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    directory = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(directory)
    finally:
        os.close(directory)


def _read(path: Path, limit: int) -> bytes | None:
    try:
        with path.open("rb") as handle:
            return handle.read(limit + 1)[:limit]
    except FileNotFoundError:
        return None


def _delete(path: Path) -> int | None:
    """The size of the file removed, None when there was none."""
    size = _size(path)
    if size is not None:
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
    return size


def _list(prop_dir: Path) -> dict[str, int]:
    files: dict[str, int] = {}
    with contextlib.suppress(FileNotFoundError), os.scandir(prop_dir) as entries:
        for entry in entries:
            name = name_of(entry.name)
            if name is not None and entry.is_file(follow_symlinks=False):
                files[name] = entry.stat().st_size
    return files


# --- the lane ---------------------------------------------------------------------------------


class StorageLane:
    """The `storage.*` core calls over `<root>/<plugin>/<property>/`, and the `[storage]`
    quotas (its own, and `ctx.store`'s, which the core API enforces)."""

    def __init__(self, root: Path, config: StorageConfig, *, max_files: int = MAX_FILES) -> None:
        self.root = root
        self.quota = config.quota_mb * MIB
        self.store_max_bytes = config.store_mb * MIB  # `ctx.store`'s quota, for the core API
        self.max_files = max_files
        self._locks: dict[str, trio.Lock] = {}
        self._usage: dict[str, Usage] = {}

    def handlers(self) -> dict[str, CoreFn]:
        return {
            "storage.put": self.put_file,
            "storage.get": self.get_file,
            "storage.list": self.list_files,
            "storage.delete": self.delete_file,
        }

    def _prop_dir(self, r: CoreRequest) -> Path:
        if not SEGMENT.match(r.plugin) or not SEGMENT.match(r.property):
            raise BadRequest(f"property {clip(r.property)!r} cannot keep files")
        return self.root / r.plugin / r.property

    async def _counted(self, plugin: str) -> Usage:
        """The plugin's running count (its lock held): scanned when missing or when its
        directory was removed since (the marker is gone)."""
        plugin_dir = self.root / plugin
        usage = self._usage.get(plugin)
        marked = await trio.to_thread.run_sync((plugin_dir / MARKER).exists)
        if usage is None or not marked:
            usage = self._usage[plugin] = await trio.to_thread.run_sync(_scan, plugin_dir)
        return usage

    async def put_file(self, r: CoreRequest, p: StoragePutParams) -> dict[str, Any]:
        prop_dir = self._prop_dir(r)
        path = prop_dir / filename_of(p.name)
        async with self._locks.setdefault(r.plugin, trio.Lock()):
            usage = await self._counted(r.plugin)
            old_size = await trio.to_thread.run_sync(_size, path)
            refusal = admit(
                usage, r.property, old_size, len(p.data), quota=self.quota, max_files=self.max_files
            )
            if refusal is not None:
                raise _full(r, p.name, refusal)
            try:
                await trio.to_thread.run_sync(_write_atomically, path, p.data)
            except OSError as exc:
                if exc.errno in (errno.ENOSPC, errno.EDQUOT):
                    raise StorageFull(
                        "the server's disk is full", {"reason": "disk_full"}
                    ) from None
                raise
            apply(usage, r.property, old_size, len(p.data))
        return {"name": p.name, "size": len(p.data)}

    async def get_file(self, r: CoreRequest, p: StorageNameParams) -> bytes | None:
        path = self._prop_dir(r) / filename_of(p.name)
        return await trio.to_thread.run_sync(_read, path, MAX_STORAGE_FILE)

    async def list_files(self, r: CoreRequest, p: StorageListParams) -> list[dict[str, Any]]:
        files = await trio.to_thread.run_sync(_list, self._prop_dir(r))
        return page(files, p.after, p.limit)

    async def delete_file(self, r: CoreRequest, p: StorageNameParams) -> bool:
        path = self._prop_dir(r) / filename_of(p.name)
        async with self._locks.setdefault(r.plugin, trio.Lock()):
            usage = await self._counted(r.plugin)
            old_size = await trio.to_thread.run_sync(_delete, path)
            if old_size is not None:
                apply(usage, r.property, old_size, None)
        return old_size is not None


def _full(r: CoreRequest, name: str, refusal: Refusal) -> StorageFull:
    details = {
        "reason": refusal.limit,
        "used": refusal.used,
        "limit": refusal.limit_value,
        "needed": refusal.needed,
        "name": clip(name),
    }
    if refusal.limit == "files":
        return StorageFull(
            f"plugin {r.plugin!r} already keeps {refusal.used} files in property "
            f"{r.property!r}: delete some before adding {clip(name)!r}",
            details,
        )
    return StorageFull(
        f"plugin {r.plugin!r} keeps {refusal.used} bytes of files, and {clip(name)!r} needs "
        f"{refusal.needed} more, past its quota of {refusal.limit_value} bytes: delete some",
        details,
    )
