"""MJPEG (multipart/x-mixed-replace) parsing: bytes in, whole parts out. Pure.

    reader = MultipartReader(boundary_of(content_type), max_part)
    for chunk in stream: for jpeg in reader.feed(chunk): ...

A part ends after its `Content-Length` bytes when the part says so, else at the next
delimiter line. Parts are returned as the camera sent them (never re-encoded). Invariants:
the same bytes give the same parts however they are split into chunks; the buffer never
holds more than `max_part` + MAX_HEADERS + the delimiter (a bigger part raises PartTooLarge);
whatever comes before the first delimiter (a preamble) is skipped.
"""

from __future__ import annotations

import re

MAX_HEADERS = 8 * 1024
_BOUNDARY = re.compile(r'boundary\s*=\s*(?:"([^"]+)"|([^;,\s]+))', re.IGNORECASE)
_LENGTH = re.compile(rb"^content-length\s*:\s*(\d{1,12})\s*$", re.IGNORECASE | re.MULTILINE)


class MultipartError(ValueError):
    """The stream is not multipart as announced."""


class PartTooLarge(MultipartError):
    pass


def boundary_of(content_type: str) -> bytes:
    """The boundary of a `multipart/x-mixed-replace; boundary=...` header, without a leading
    `--` that some cameras put in it (they then send `--` + that text as delimiter lines)."""
    if not content_type.lower().startswith("multipart/"):
        raise MultipartError(f"not a multipart stream: {content_type[:80]!r}")
    found = _BOUNDARY.search(content_type)
    if found is None:
        raise MultipartError("the multipart stream names no boundary")
    boundary = (found.group(1) or found.group(2)).strip()
    while boundary.startswith("--"):
        boundary = boundary[2:]
    if not boundary or len(boundary) > 200:
        raise MultipartError("the multipart boundary is empty or too long")
    return boundary.encode("latin-1")


class MultipartReader:
    def __init__(self, boundary: bytes, max_part: int) -> None:
        self.delimiter = b"--" + boundary
        self.max_part = max_part
        self._buf = bytearray()
        self._in_part = False  # past a delimiter line, looking at a part's headers
        self._length: int | None = None  # the current part's Content-Length
        self._body_at = -1  # where the current part's body starts in the buffer
        self._scanned = 0  # how far a part without Content-Length was searched for its end
        self.ended = False  # the closing delimiter came

    def feed(self, data: bytes) -> list[bytes]:
        if self.ended:
            return []
        self._buf += data
        parts: list[bytes] = []
        while not self.ended:
            part = self._next()
            if part is None:
                break
            parts.append(part)
        if len(self._buf) > self.max_part + MAX_HEADERS + len(self.delimiter) + 4:
            raise PartTooLarge(f"an MJPEG part is larger than {self.max_part} bytes")
        return parts

    def _next(self) -> bytes | None:
        buf = self._buf
        if not self._in_part:
            at = buf.find(self.delimiter)
            if at < 0:  # keep what could be the start of a delimiter
                keep = len(self.delimiter) - 1
                if len(buf) > keep:
                    del buf[: len(buf) - keep]
                return None
            end = at + len(self.delimiter)
            if len(buf) < end + 2:
                del buf[:at]
                return None
            if buf[end : end + 2] == b"--":
                self.ended = True
                buf.clear()
                return None
            eol = buf.find(b"\n", end)
            if eol < 0:
                del buf[:at]
                if len(buf) > MAX_HEADERS:
                    raise MultipartError("a delimiter line is too long")
                return None
            del buf[: eol + 1]
            self._in_part, self._body_at, self._length = True, -1, None
        if self._body_at < 0 and bytes(buf[:1]) in (b"\r", b"\n"):  # a part without headers
            if buf[:2] == b"\r\n":
                self._body_at = 2
            elif buf[:1] == b"\n":
                self._body_at = 1
            elif len(buf) < 2:
                return None
        if self._body_at < 0:
            blank = buf.find(b"\r\n\r\n")
            skip = 4
            lf = buf.find(b"\n\n")
            if lf >= 0 and (blank < 0 or lf < blank):
                blank, skip = lf, 2
            if blank < 0:
                if len(buf) > MAX_HEADERS:
                    raise MultipartError("a part's headers are too long")
                return None
            headers = bytes(buf[:blank])
            found = _LENGTH.search(headers.replace(b"\r\n", b"\n"))
            if found is not None:
                self._length = int(found.group(1))
                if self._length > self.max_part:
                    raise PartTooLarge(f"an MJPEG part is larger than {self.max_part} bytes")
            self._body_at = blank + skip
        start = self._body_at
        if self._length is not None:
            if len(buf) < start + self._length:
                return None
            part = bytes(buf[start : start + self._length])
            del buf[: start + self._length]
        else:
            # resume where the last look ended (less a delimiter's length, which may straddle
            # two chunks): a large part arriving in small chunks is searched once, not again
            # from its start for every chunk
            resume = max(start, self._scanned - len(self.delimiter) - 1)
            end = buf.find(b"\n" + self.delimiter, resume)
            if end < 0:
                self._scanned = len(buf)
                if len(buf) - start > self.max_part:
                    raise PartTooLarge(f"an MJPEG part is larger than {self.max_part} bytes")
                return None
            stop = end - 1 if end > start and buf[end - 1 : end] == b"\r" else end
            part = bytes(buf[start:stop])
            del buf[: end + 1]
            self._scanned = 0
        self._in_part = False
        return part
