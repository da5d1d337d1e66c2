"""Motion detection by frame difference: a camera's settings, a small grayscale picture of a
frame, and the detector's step. Pure (no trio, no I/O); `motion_watch.py` carries it out.

    small = thumbnail(jpeg)                          # 80x45 grayscale, cheap (JPEG draft mode)
    state, motion = step(state, settings, small, now)

A pixel of the small picture has changed when its gray level moved by more than
`pixel_delta`; there is motion when at least `threshold` (a fraction of the picture) changed
since the previous frame looked at. An event follows only `min_interval_s` after the last
one. Settings are a camera's own, stored with its source (`"motion"` in the camera row's JSON
`source`), off by default; `record_s` > 0 also records a clip of that length on motion.

Invariants (tests/cameras/test_motion.py, hypothesis): a disabled detector never reports;
two reports are at least `min_interval_s` apart; the same picture twice is never motion; the
first frame only sets the reference.
"""

from __future__ import annotations

import io
from typing import Annotated, Any

import msgspec
from PIL import Image

SMALL = (80, 45)  # the picture compared: 3,600 pixels


class MotionSettings(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    """A camera's motion settings, as the admin API takes and shows them."""

    enabled: bool = False
    # the fraction of the picture that must change: lower is more sensitive
    threshold: Annotated[float, msgspec.Meta(gt=0, le=1)] = 0.02
    # how far (0..255) a pixel's gray level must move to count as changed
    pixel_delta: Annotated[int, msgspec.Meta(ge=1, le=255)] = 25
    min_interval_s: Annotated[float, msgspec.Meta(ge=1, le=3600)] = 10.0
    record_s: Annotated[float, msgspec.Meta(ge=0, le=3600)] = 0.0  # 0: no clip on motion


def motion_of(source: dict[str, Any]) -> MotionSettings:
    """A camera row's motion settings (the defaults, so off, when it has none or they no
    longer validate)."""
    raw = source.get("motion")
    if not isinstance(raw, dict):
        return MotionSettings()
    try:
        return msgspec.convert(raw, MotionSettings)
    except msgspec.ValidationError:
        return MotionSettings()


class DetectorState(msgspec.Struct, frozen=True):
    previous: bytes | None = None  # the small picture of the last frame looked at
    last_event: float | None = None


class Motion(msgspec.Struct, frozen=True):
    score: float  # the fraction of the picture that changed
    at: float


def thumbnail(jpeg: bytes, size: tuple[int, int] = SMALL) -> bytes:
    """The frame as `size` grayscale pixels (row by row); decoding at 1/2..1/8 scale first
    (JPEG draft mode) keeps a 1080p frame to a few milliseconds. ValueError if not an image."""
    try:
        with Image.open(io.BytesIO(jpeg)) as image:
            image.draft("L", (size[0] * 2, size[1] * 2))
            small = image.convert("L").resize(size, Image.Resampling.BILINEAR)
            return small.tobytes()
    except (OSError, Image.DecompressionBombError) as exc:
        raise ValueError(f"not a picture: {exc}") from None


def changed_fraction(a: bytes, b: bytes, pixel_delta: int) -> float:
    """The fraction of pixels whose level differs by more than `pixel_delta` (0 when the
    pictures do not have the same size)."""
    if len(a) != len(b) or not a:
        return 0.0
    changed = sum(1 for x, y in zip(a, b, strict=True) if abs(x - y) > pixel_delta)
    return changed / len(a)


def step(
    state: DetectorState, settings: MotionSettings, small: bytes, now: float
) -> tuple[DetectorState, Motion | None]:
    """Look at one more frame; the new state and the motion it shows, if any to report."""
    if not settings.enabled:
        return DetectorState(), None
    previous, state = state.previous, msgspec.structs.replace(state, previous=small)
    if previous is None:
        return state, None
    score = changed_fraction(previous, small, settings.pixel_delta)
    if score < settings.threshold:
        return state, None
    last = state.last_event
    if last is not None and now - last < settings.min_interval_s:
        return state, None
    return msgspec.structs.replace(state, last_event=now), Motion(round(score, 4), now)
