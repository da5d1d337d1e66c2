"""Length-prefixed msgpack framing. Pure: bytes in, messages out.

A frame is a 4-byte big-endian payload length followed by that many bytes of msgpack. Frames
longer than the channel's limit, zero-length frames and payloads that are not a known message
raise `ProtocolError` (so do payloads nested too deeply to decode); a peer that sends one is
broken and the channel must be closed.
"""

from __future__ import annotations

from typing import Any, Generic, TypeVar

import msgspec

from ..errors import ProtocolError

HEADER = 4
DEFAULT_MAX_FRAME = 8 * 1024 * 1024

M = TypeVar("M")

_encoder = msgspec.msgpack.Encoder()


def encode_frame(message: Any, max_frame: int = DEFAULT_MAX_FRAME) -> bytes:
    """One message as one frame."""
    buffer = bytearray(HEADER)
    _encoder.encode_into(message, buffer, HEADER)
    size = len(buffer) - HEADER
    if size > max_frame:
        raise ProtocolError(f"outgoing frame of {size} bytes exceeds the {max_frame} byte limit")
    buffer[:HEADER] = size.to_bytes(HEADER, "big")
    return bytes(buffer)


class FrameDecoder(Generic[M]):
    """Feed it bytes as they arrive in any chunking; it returns every complete message."""

    def __init__(self, message_type: Any, max_frame: int = DEFAULT_MAX_FRAME) -> None:
        self._decoder: msgspec.msgpack.Decoder[M] = msgspec.msgpack.Decoder(message_type)
        self._max = max_frame
        self._buffer = bytearray()

    @property
    def pending(self) -> int:
        """Bytes received that do not yet form a whole frame."""
        return len(self._buffer)

    def feed(self, data: bytes) -> list[M]:
        self._buffer += data
        messages: list[M] = []
        buf = self._buffer
        start = 0
        while len(buf) - start >= HEADER:
            size = int.from_bytes(buf[start : start + HEADER], "big")
            if size == 0 or size > self._max:
                raise ProtocolError(
                    f"frame length {size} outside 1..{self._max}",
                    {"frame_length": size, "max_frame": self._max},
                )
            end = start + HEADER + size
            if len(buf) < end:
                break
            payload = bytes(buf[start + HEADER : end])
            start = end
            try:
                messages.append(self._decoder.decode(payload))
            except (msgspec.DecodeError, msgspec.ValidationError) as exc:
                raise ProtocolError(f"undecodable frame: {exc}", {"frame_length": size}) from exc
            except RecursionError:  # msgspec recurses: a frame nested ~1,000 deep
                raise ProtocolError(
                    "undecodable frame: nested too deeply", {"frame_length": size}
                ) from None
        del buf[:start]
        return messages
