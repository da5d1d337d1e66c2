"""A recording on disk: its format, its metadata and where it lives. No trio.

Layout (under `<data_dir>/recordings`, or `[recordings] dir`):

    <property>/<id>.mjpeg   the clip: MJPEG, one multipart part per frame
    <property>/<id>.json    its ClipMeta (`finished: false` while it is being recorded)

The clip format is `multipart/x-mixed-replace` with boundary `pentarunclip`, as FFmpeg's
`mpjpeg` muxer writes it and as MJPEG cameras send it: each frame is

    --pentarunclip\\r\\n
    Content-Type: image/jpeg\\r\\n
    Content-Length: <n>\\r\\n
    X-Timestamp: <unix seconds, 3 decimals>\\r\\n
    \\r\\n
    <n bytes of JPEG, as the camera sent them>\\r\\n

so a clip plays in VLC or `ffplay -f mpjpeg`, any multipart reader splits it, and
`Content-Length` makes the parts self-delimiting (`read_parts`). Frames are never re-encoded.

Invariants: an id is `<13-digit start ms>-<8 hex>` (`CLIP_ID`), so ids sort by start time and
can name a file safely; property ids are the admin API's ids (no `/`, never `.` or `..`
alone); a clip whose metadata says `finished: false` at start-up was cut short by a crash and
is recovered (`recover`): truncated to its last whole frame and finished, or removed when
it holds none.
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import msgspec

log = logging.getLogger(__name__)

BOUNDARY = b"pentarunclip"
CONTENT_TYPE = "multipart/x-mixed-replace; boundary=pentarunclip"
CLIP_ID_PATTERN = r"^[0-9]{13}-[0-9a-f]{8}\Z"
CLIP_ID = re.compile(CLIP_ID_PATTERN)
MAX_CLIP_ID = 22
_PROPERTY = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}\Z")  # the admin API's ID_PATTERN
_HEADER_END = b"\r\n\r\n"
_LENGTH = re.compile(rb"^content-length:\s*(\d{1,12})\s*$", re.IGNORECASE | re.MULTILINE)
_STAMP = re.compile(rb"^x-timestamp:\s*([0-9]{1,12}(?:\.[0-9]{1,6})?)\s*$", re.I | re.M)
MAX_PART_HEADERS = 512

Trigger = Literal["request", "admin", "motion", "recovered"]


class ClipMeta(msgspec.Struct, frozen=True, kw_only=True):
    id: str
    property_id: str
    camera: str
    started_at: float  # unix seconds
    ended_at: float
    frames: int
    bytes: int
    trigger: Trigger
    by: str  # who asked: plugin:<key>, operator:<name>, core:motion
    finished: bool = True

    @property
    def duration_s(self) -> float:
        return max(0.0, self.ended_at - self.started_at)

    def view(self) -> dict[str, object]:
        """What the core calls and the admin API show of a clip."""
        return {
            "id": self.id,
            "camera": self.camera,
            "started_at": self.started_at,
            "ended_at": self.ended_at,
            "duration_s": round(self.duration_s, 3),
            "frames": self.frames,
            "bytes": self.bytes,
            "trigger": self.trigger,
            "by": self.by,
            "content_type": CONTENT_TYPE,
        }


def new_clip_id(started_at: float, token_hex: str) -> str:
    clip_id = f"{int(started_at * 1000):013d}-{token_hex}"
    if not CLIP_ID.fullmatch(clip_id):
        raise ValueError(f"not a clip id: {clip_id!r}")
    return clip_id


def part(jpeg: bytes, at: float) -> bytes:
    """One frame of a clip file (see the module docstring)."""
    head = (
        b"--" + BOUNDARY + b"\r\nContent-Type: image/jpeg\r\n"
        b"Content-Length: %d\r\nX-Timestamp: %.3f\r\n\r\n" % (len(jpeg), at)
    )
    return head + jpeg + b"\r\n"


@dataclass(frozen=True)
class Part:
    at: float
    jpeg: bytes
    end: int  # offset just past this part in the file


def read_parts(data: bytes) -> Iterator[Part]:
    """The whole frames of a clip file, in order; stops at the first part that is cut short
    or malformed (what a crash while writing leaves)."""
    delimiter = b"--" + BOUNDARY + b"\r\n"
    at = 0
    while data.startswith(delimiter, at):
        head_end = data.find(_HEADER_END, at, at + MAX_PART_HEADERS)
        if head_end < 0:
            return
        head = data[at + len(delimiter) : head_end]
        length, stamp = _LENGTH.search(head), _STAMP.search(head)
        if length is None:
            return
        body = head_end + len(_HEADER_END)
        end = body + int(length.group(1))
        if data[end : end + 2] != b"\r\n":
            return
        yield Part(float(stamp.group(1)) if stamp else 0.0, data[body:end], end + 2)
        at = end + 2


# --- the directory of clips (blocking: called through trio.to_thread) ------------------


class ClipDir:
    def __init__(self, root: Path) -> None:
        self.root = root

    def property_dir(self, property_id: str) -> Path:
        if not _PROPERTY.fullmatch(property_id) or property_id in (".", ".."):
            raise ValueError(f"not a property id: {property_id!r}")
        return self.root / property_id

    def data_path(self, property_id: str, clip_id: str) -> Path:
        if not CLIP_ID.fullmatch(clip_id):
            raise ValueError(f"not a clip id: {clip_id!r}")
        return self.property_dir(property_id) / f"{clip_id}.mjpeg"

    def meta_path(self, property_id: str, clip_id: str) -> Path:
        return self.data_path(property_id, clip_id).with_suffix(".json")

    def write_meta(self, meta: ClipMeta) -> None:
        """Replace the clip's metadata atomically."""
        path = self.meta_path(meta.property_id, meta.id)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".json.tmp")
        tmp.write_bytes(msgspec.json.encode(meta))
        tmp.replace(path)

    def remove(self, property_id: str, clip_id: str) -> int:
        """Delete a clip (data, then metadata); the bytes it freed."""
        data = self.data_path(property_id, clip_id)
        freed = 0
        try:
            freed = data.stat().st_size
            data.unlink()
        except FileNotFoundError:
            pass
        self.meta_path(property_id, clip_id).unlink(missing_ok=True)
        return freed

    def load(self) -> list[ClipMeta]:
        """Every finished clip under the root; unfinished ones are recovered first."""
        clips: list[ClipMeta] = []
        if not self.root.is_dir():
            return clips
        for prop in sorted(self.root.iterdir()):
            if not prop.is_dir() or not _PROPERTY.fullmatch(prop.name):
                continue
            for meta_file in sorted(prop.glob("*.json")):
                if not CLIP_ID.fullmatch(meta_file.stem):
                    continue
                try:
                    meta = msgspec.json.decode(meta_file.read_bytes(), type=ClipMeta)
                except (OSError, msgspec.DecodeError) as exc:
                    log.warning("recording %s: unreadable metadata (%s), skipped", meta_file, exc)
                    continue
                if meta.id != meta_file.stem or meta.property_id != prop.name:
                    log.warning("recording %s: metadata names another clip, skipped", meta_file)
                    continue
                recovered = meta if meta.finished else self.recover(meta)
                if recovered is not None:
                    clips.append(recovered)
        return clips

    def recover(self, meta: ClipMeta) -> ClipMeta | None:
        """Finish a clip a crash cut short: keep its whole frames, drop the rest."""
        path = self.data_path(meta.property_id, meta.id)
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            data = b""
        parts = list(read_parts(data))
        if not parts:
            self.remove(meta.property_id, meta.id)
            log.warning("recording %s/%s: no whole frame, removed", meta.property_id, meta.id)
            return None
        end = parts[-1].end
        if end < len(data):
            os.truncate(path, end)
        finished = msgspec.structs.replace(
            meta,
            ended_at=max(meta.started_at, parts[-1].at),
            frames=len(parts),
            bytes=end,
            finished=True,
        )
        self.write_meta(finished)
        log.warning("recording %s/%s: recovered %d frames", meta.property_id, meta.id, len(parts))
        return finished


class ClipWriter:
    """Appends frames to one clip file (blocking; one writer per clip)."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self._file = path.open("ab")
        self.frames = 0
        self.bytes = 0

    def write(self, jpeg: bytes, at: float) -> None:
        data = part(jpeg, at)
        self._file.write(data)
        self._file.flush()
        self.frames += 1
        self.bytes += len(data)

    def close(self) -> None:
        self._file.close()


def read_range(path: Path, offset: int, length: int) -> tuple[bytes, int]:
    """Up to `length` bytes of a clip from `offset`, and the clip's size."""
    with path.open("rb") as handle:
        size = os.fstat(handle.fileno()).st_size
        handle.seek(min(offset, size))
        return handle.read(length), size
