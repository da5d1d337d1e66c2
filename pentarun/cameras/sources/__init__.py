"""Camera sources: each `run_*` connects to one camera and hands every JPEG frame to `publish`
until it fails (it raises SourceError, never with a credential in the message) or is cancelled.
The hub (`cameras/hub.py`) owns the one running source per camera and reconnects it."""

from __future__ import annotations

from collections.abc import Callable

Publish = Callable[[bytes], None]


class SourceError(Exception):
    """A camera source failed; the message is safe to show and log (no credentials)."""


def is_jpeg(data: bytes) -> bool:
    return data[:2] == b"\xff\xd8"
