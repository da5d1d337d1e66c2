"""The thresholds of camera sources: `[cameras]` of the configuration (config.py), where
every threshold lives, bounded."""

from __future__ import annotations

from ..config import CamerasConfig as CameraSettings

__all__ = ["CameraSettings"]
