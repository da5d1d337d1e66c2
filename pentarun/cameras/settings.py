"""The thresholds of camera sources, in one place (every one bounded)."""

from __future__ import annotations

import msgspec

from .backoff import Backoff


class CameraSettings(msgspec.Struct, frozen=True):
    connect_timeout_s: float = 10.0
    read_timeout_s: float = 10.0  # a source that sends nothing this long is offline
    snapshot_interval_s: float = 1.0  # how often an `http` source is asked for a JPEG
    max_frame_bytes: int = 4 * 1024 * 1024  # a bigger frame is an error (IPC frames hold 8 MiB)
    max_fps: float = 10.0  # frames a second PyAV sources encode to JPEG at most
    jpeg_quality: int = 80  # of frames PyAV decoded (http and mjpeg frames are never re-encoded)
    reconcile_s: float = 2.0  # how often the hub rereads the cameras table (besides pokes)
    wait_frame_s: float = 10.0  # longest a consumer waits for a next frame
    demo_fps: float = 5.0
    backoff: Backoff = msgspec.field(default_factory=Backoff)
