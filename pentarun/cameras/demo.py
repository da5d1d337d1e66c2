"""Demo camera frames: real JPEG images, so a real client (Home Assistant) shows a picture.

A frame shows the camera's name, the time and a moving bar, so a stream visibly moves.
"""

from __future__ import annotations

import io
import math
import time

from PIL import Image, ImageDraw

WIDTH, HEIGHT = 640, 360
QUALITY = 75


def render_frame(camera_name: str, now: float | None = None) -> bytes:
    now = time.time() if now is None else now
    image = Image.new("RGB", (WIDTH, HEIGHT), (24, 32, 48))
    draw = ImageDraw.Draw(image)
    for y in range(0, HEIGHT, 8):  # a gradient sky, so the JPEG is not trivially flat
        shade = 40 + int(60 * y / HEIGHT)
        draw.rectangle((0, y, WIDTH, y + 8), fill=(shade // 2, shade // 2 + 10, shade + 30))
    x = int((math.sin(now) + 1) / 2 * (WIDTH - 80))
    draw.rectangle((x, HEIGHT - 90, x + 80, HEIGHT - 40), fill=(230, 170, 40))
    stamp = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(now))
    draw.text((16, 14), f"PentaVision demo - {camera_name}", fill=(255, 255, 255))
    draw.text((16, 34), f"{stamp} UTC", fill=(200, 220, 255))
    out = io.BytesIO()
    image.save(out, format="JPEG", quality=QUALITY)
    return out.getvalue()
