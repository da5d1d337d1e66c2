"""Recordings: clips of cameras on disk, per property.

    clips.py       the clip format (MJPEG parts), metadata, layout on disk, recovery
    retention.py   which clips expire (pure)
    service.py     `Recordings`: recording from the camera hub, the index, the retention task

This package's own import stays light (no trio): `lanes/calls.py` takes the id pattern here.
"""

from .clips import CLIP_ID_PATTERN, CONTENT_TYPE, MAX_CLIP_ID, ClipMeta

__all__ = ["CLIP_ID_PATTERN", "CONTENT_TYPE", "MAX_CLIP_ID", "ClipMeta"]
