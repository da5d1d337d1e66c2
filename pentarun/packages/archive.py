"""Safe reading of a plugin zip. Pure: bytes in, files and problems out.

Refused, each with its own code: a corrupt or encrypted archive; absolute, backslashed,
empty, `.` or `..` paths; symlinks and special files; duplicate names (also those that differ
only by case); more files, more total bytes, a larger file or a higher compression ratio than
the limits allow. Sizes are checked from the headers before anything is inflated, and inflating
stops at the declared size (a lying header fails its CRC check).
"""

from __future__ import annotations

import io
import stat
import zipfile
from collections import Counter

import msgspec

from .problems import Problem


class ArchiveLimits(msgspec.Struct, frozen=True):
    max_package_bytes: int = 64 * 1024 * 1024
    max_files: int = 2000
    max_total_bytes: int = 256 * 1024 * 1024
    max_file_bytes: int = 64 * 1024 * 1024
    max_ratio: float = 200.0


def _path_problem(name: str) -> Problem | None:
    if name.startswith("/") or (len(name) > 1 and name[1] == ":"):
        return Problem("archive.absolute_path", name, "absolute paths are not allowed")
    if "\\" in name:
        return Problem("archive.bad_path", name, "use '/' as the path separator")
    parts = name.rstrip("/").split("/")
    if ".." in parts:
        return Problem("archive.path_traversal", name, "'..' in a path is not allowed")
    if any(part in ("", ".") for part in parts) or "\x00" in name:
        return Problem("archive.bad_path", name, "empty or '.' path components are not allowed")
    return None


def _kind_problem(info: zipfile.ZipInfo) -> Problem | None:
    mode = info.external_attr >> 16
    kind = stat.S_IFMT(mode)
    if info.create_system != 3 or kind == 0:  # not from Unix, or no mode: a plain entry
        return None
    if stat.S_ISLNK(mode):
        return Problem("archive.symlink", info.filename, "symbolic links are not allowed")
    if not (stat.S_ISREG(mode) or stat.S_ISDIR(mode)):
        return Problem("archive.special_file", info.filename, "only regular files are allowed")
    return None


def read_archive(data: bytes, limits: ArchiveLimits) -> tuple[dict[str, bytes], list[Problem]]:
    """Every regular file of the zip by name, or the problems that make it unsafe."""
    if len(data) > limits.max_package_bytes:
        return {}, [
            Problem(
                "archive.too_large", "", f"package is larger than {limits.max_package_bytes} bytes"
            )
        ]
    try:
        archive = zipfile.ZipFile(io.BytesIO(data))
        infos = archive.infolist()
    except (zipfile.BadZipFile, zipfile.LargeZipFile, ValueError, OSError) as exc:
        return {}, [Problem("archive.corrupt", "", f"not a readable zip archive: {exc}")]
    problems: list[Problem] = []
    entries = [i for i in infos if not i.is_dir()]
    if len(entries) > limits.max_files:
        problems.append(
            Problem(
                "archive.too_many_files", "", f"{len(entries)} files, at most {limits.max_files}"
            )
        )
    total = sum(i.file_size for i in entries)
    if total > limits.max_total_bytes:
        problems.append(
            Problem(
                "archive.too_large",
                "",
                f"{total} bytes uncompressed, at most {limits.max_total_bytes}",
            )
        )
    counts = Counter(i.filename for i in infos)
    folded = Counter(i.filename.rstrip("/").casefold() for i in infos)
    for name, n in sorted(counts.items()):
        if n > 1:
            problems.append(Problem("archive.duplicate_name", name, f"{n} entries share this name"))
        elif folded[name.rstrip("/").casefold()] > 1:
            problems.append(
                Problem(
                    "archive.duplicate_name",
                    name,
                    "another entry differs from this one only by case",
                )
            )
    for info in infos:
        problem = _path_problem(info.filename) or _kind_problem(info)
        if problem is None and info.flag_bits & 0x1:
            problem = Problem("archive.encrypted", info.filename, "encrypted entries are refused")
        if problem is None and not info.is_dir():
            if info.file_size > limits.max_file_bytes:
                problem = Problem(
                    "archive.file_too_large",
                    info.filename,
                    f"{info.file_size} bytes, at most {limits.max_file_bytes}",
                )
            elif info.file_size / max(info.compress_size, 1) > limits.max_ratio:
                problem = Problem(
                    "archive.compression_ratio",
                    info.filename,
                    f"compression ratio above {limits.max_ratio:g} (zip bomb?)",
                )
        if problem is not None:
            problems.append(problem)
    if problems:
        return {}, problems
    files: dict[str, bytes] = {}
    for info in entries:
        try:
            files[info.filename] = archive.read(info)
        except (zipfile.BadZipFile, NotImplementedError, OSError, EOFError) as exc:
            problems.append(Problem("archive.corrupt", info.filename, f"cannot inflate: {exc}"))
    return ({}, problems) if problems else (files, [])
