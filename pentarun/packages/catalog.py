"""The update catalog: a directory of packages an operator points the server at (SPEC §7).

    catalog = Catalog(directory, max_package_bytes, scan_s)     await nursery.start(catalog.run)
    catalog.update_for(key, installed_version) -> CatalogEntry | None   (no I/O: the last scan)
    await catalog.package(key, version) -> bytes                  (the zip, for an upload)

`install.catalog_dir` names a local or mounted directory of package zips (as `pentarun plugin
pack` and `sign` make them). Every `install.catalog_scan_s` the directory is scanned off the
trio thread: each `*.zip` (at most MAX_ENTRIES, each at most the package size limit) is opened
just enough to read its `plugin.id` (key, version, publisher, signed or not); a file whose size
and mtime did not change is not opened again. The plugin list and detail say when a newer
version of an installed plugin is there (`update_available`); `POST /api/plugins/{key}/upgrade`
uploads it through the normal pipeline — its signature, gates and approval are checked there
exactly as for an upload, so the catalog itself is trusted for nothing.

Newest means the highest version (versions.py order; a version that does not parse is skipped).
"""

from __future__ import annotations

import json
import logging
import zipfile
from collections.abc import Iterable
from pathlib import Path

import msgspec
import trio

from ..errors import NotFound
from .identity import FILE as PLUGIN_ID
from .versions import Version, VersionError, parse_version

log = logging.getLogger(__name__)

MAX_ENTRIES = 1000  # zips looked at in one scan
MAX_ID_BYTES = 1024 * 1024  # a plugin.id larger than this is not a package we would take


class CatalogEntry(msgspec.Struct, frozen=True):
    key: str
    version: str
    file: str  # its name in the catalog directory
    publisher: str
    signed: bool
    size: int


def _version(text: str) -> Version | None:
    try:
        return parse_version(text)
    except VersionError:
        return None


def newest(entries: Iterable[CatalogEntry], key: str, above: str = "") -> CatalogEntry | None:
    """The highest version of `key` in the catalog, if higher than `above` ("": any)."""
    floor = _version(above) if above else None
    best: tuple[Version, CatalogEntry] | None = None
    for entry in entries:
        version = _version(entry.version) if entry.key == key else None
        if version is None or (floor is not None and version.key() <= floor.key()):
            continue
        if best is None or version.key() > best[0].key():
            best = (version, entry)
    return best[1] if best else None


def read_entry(path: Path, max_bytes: int) -> CatalogEntry | None:
    """The catalog entry of one zip, or None when it is not a package we could take."""
    try:
        size = path.stat().st_size
        if size > max_bytes:
            return None
        with zipfile.ZipFile(path) as archive:
            info = archive.getinfo(PLUGIN_ID)
            if info.file_size > MAX_ID_BYTES:
                return None
            raw = json.loads(archive.read(info))
        key, version = raw["key"], raw["version"]
        if not isinstance(key, str) or not isinstance(version, str):
            return None
        return CatalogEntry(
            key, version, path.name, str(raw.get("publisher", "")), "signature" in raw, size
        )
    except (OSError, KeyError, ValueError, TypeError, zipfile.BadZipFile):
        return None


class Catalog:
    def __init__(self, directory: str, max_package_bytes: int, scan_s: float) -> None:
        self.directory = Path(directory) if directory else None
        self.max_package_bytes = max_package_bytes
        self.scan_s = scan_s
        self.entries: list[CatalogEntry] = []
        self.scanned_at: float | None = None
        self._seen: dict[str, tuple[int, int, CatalogEntry | None]] = {}  # name -> size, mtime

    @property
    def configured(self) -> bool:
        return self.directory is not None

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        await self.rescan()
        task_status.started()
        if not self.configured:
            return
        while True:
            await trio.sleep(self.scan_s)
            await self.rescan()

    async def rescan(self) -> list[CatalogEntry]:
        if self.directory is not None:
            self.entries = await trio.to_thread.run_sync(self._scan, self.directory)
            self.scanned_at = trio.current_time()
        return self.entries

    def _scan(self, directory: Path) -> list[CatalogEntry]:
        try:
            paths = sorted(p for p in directory.iterdir() if p.suffix == ".zip")[:MAX_ENTRIES]
        except OSError as exc:
            log.warning("the catalog %s cannot be read: %s", directory, exc)
            return []
        seen: dict[str, tuple[int, int, CatalogEntry | None]] = {}
        for path in paths:
            try:
                st = path.stat()
            except OSError:
                continue
            before = self._seen.get(path.name)
            if before is not None and before[:2] == (st.st_size, st.st_mtime_ns):
                seen[path.name] = before
            else:
                seen[path.name] = (
                    st.st_size,
                    st.st_mtime_ns,
                    read_entry(path, self.max_package_bytes),
                )
        self._seen = seen
        return [entry for _, _, entry in seen.values() if entry is not None]

    def update_for(self, key: str, installed_version: str) -> CatalogEntry | None:
        """A newer version of an installed plugin, as of the last scan."""
        return newest(self.entries, key, installed_version)

    async def package(self, key: str, version: str = "") -> tuple[CatalogEntry, bytes]:
        """The newest version of `key` (or that `version`) and its bytes, read off the loop."""
        await self.rescan()
        candidates = [e for e in self.entries if not version or e.version == version]
        entry = newest(candidates, key)
        if entry is None or self.directory is None:
            what = f"{key} {version}".strip()
            raise NotFound(f"the catalog has no {what}", {"plugin": key, "version": version})
        data = await trio.to_thread.run_sync(self._read, self.directory / entry.file)
        return entry, data

    def _read(self, path: Path) -> bytes:
        """The zip, read only if it still fits the package limit (it may have been replaced
        since the scan); a larger one is refused by the upload as any oversized package."""
        with path.open("rb") as handle:
            return handle.read(self.max_package_bytes + 1)
