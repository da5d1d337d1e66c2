"""The Home Assistant plugin: the HA API of SPEC §8, written only against pentarun.sdk.

The core authenticates every request (the key decides the property), rate-limits it and
passes `params = {"method", "path", "query", "body", "base_url", "auth", "caller",
"rate_limit"}`; this plugin shapes answers. URLs it hands out start with `base_url` (the
listener's public URL, never the request's Host header). A stream token is minted with the
request's `caller`, so it is bound to the request's key and dies with it.
"""

import json
import logging
import math
from pathlib import Path

import trio

from pentarun.sdk import Context, Error, Plugin, Response, Stream

plugin = Plugin()
log = logging.getLogger("homeassistant")
DEFINITION = json.loads((Path(__file__).parent.parent / "definition.json").read_text())
RATE_LIMIT = DEFINITION["listener"]["rate_limit"]
API = "/api/ha/v1"
MAX_FPS = 15.0


def _camera_id(params: dict) -> str:
    camera = (params.get("path") or {}).get("id")
    if not isinstance(camera, str) or not camera:
        raise Error("bad_request", "a camera id is required", 400)
    return camera


def _view(camera: dict, base_url: str) -> dict:
    return {
        "id": camera["id"],
        "name": camera["name"],
        "status": camera["status"],
        "has_audio": camera["has_audio"],
        "snapshot_url": f"{base_url}{API}/cameras/{camera['id']}/snapshot.jpg",
        "streams": camera["streams"],
    }


def _rate_limit(params: dict) -> dict:
    """The budget the core applies to this request's key (the manifest's outside a listener)."""
    applied = params.get("rate_limit") or {
        "limit": RATE_LIMIT["requests"],
        "window_s": RATE_LIMIT["window_s"],
    }
    window = applied["window_s"]
    return {"limit": applied["limit"], "window_s": int(window) if window == int(window) else window}


@plugin.handler("ha.info")
async def info(ctx: Context, params: dict) -> dict:
    prop = await ctx.core.call("properties.get")
    return {
        "api_version": "1",
        "server": "pentarun",
        "property": {"id": prop["id"], "name": prop["name"]},
        "rate_limit": _rate_limit(params),
    }


@plugin.handler("ha.cameras.list")
async def cameras_list(ctx: Context, params: dict) -> dict:
    base = params.get("base_url", "")
    cameras = await ctx.core.call("cameras.list")
    return {"property_id": ctx.property, "cameras": [_view(c, base) for c in cameras]}


@plugin.handler("ha.cameras.get")
async def cameras_get(ctx: Context, params: dict) -> dict:
    camera = await ctx.core.call("cameras.get", camera=_camera_id(params))
    return _view(camera, params.get("base_url", ""))


@plugin.handler("ha.cameras.snapshot")
async def snapshot(ctx: Context, params: dict) -> Response:
    jpeg = await ctx.core.call("cameras.snapshot", camera=_camera_id(params))
    return Response(200, jpeg, {"Cache-Control": "no-store"}, "image/jpeg")


@plugin.handler("ha.cameras.mjpeg")
async def mjpeg(ctx: Context, params: dict) -> Stream:
    """multipart/x-mixed-replace: the camera's frames as the core has them (an MJPEG camera's
    parts unchanged), the latest at once, then each new one, at most `fps` (default 15) a
    second. The core holds the one connection to the camera; this only relays its frames."""
    camera = _camera_id(params)
    try:
        fps = float((params.get("query") or {}).get("fps", MAX_FPS))
    except ValueError:
        raise Error("bad_request", "fps must be a number", 400) from None
    if not math.isfinite(fps):
        raise Error("bad_request", "fps must be a finite number", 400)
    fps = min(max(fps, 0.2), MAX_FPS)
    # 404 for an unknown camera, 503 for an offline one: before any streaming
    first = await ctx.core.call("cameras.frame", camera=camera)

    async def frames():
        frame, interval = first, 1 / fps
        while True:
            sent_at = trio.current_time()
            jpeg = frame["jpeg"]
            head = f"--frame\r\nContent-Type: image/jpeg\r\nContent-Length: {len(jpeg)}\r\n\r\n"
            yield head.encode() + jpeg + b"\r\n"
            await trio.sleep_until(sent_at + interval)
            try:
                frame = await ctx.core.call("cameras.frame", camera=camera, after=frame["seq"])
            except Error as exc:  # the camera went offline: end the stream (clients reconnect)
                log.info("stream of %s ends: %s", camera, exc.message)
                return

    return Stream(
        frames(), "multipart/x-mixed-replace; boundary=frame", 200, {"Cache-Control": "no-store"}
    )


@plugin.handler("ha.streams.token")
async def stream_token(ctx: Context, params: dict) -> Response:
    camera = _camera_id(params)
    body = params.get("body") or {}
    if not isinstance(body, dict):
        raise Error("bad_request", "the body must be a JSON object", 400)
    issued = await ctx.core.call(
        "streams.token",
        camera=camera,
        stream=body.get("stream", "main"),
        protocol=body.get("protocol", "mjpeg"),
        ttl_s=body.get("ttl_s"),
        caller=params.get("caller", ""),  # binds the token to this request's key
    )
    base = f"{params.get('base_url', '')}{API}/cameras/{camera}"
    issued["urls"] = {
        "mjpeg": f"{base}/mjpeg?token={issued['token']}",
        "snapshot": f"{base}/snapshot.jpg?token={issued['token']}",
    }
    await ctx.store.set("tokens_issued", await ctx.store.get("tokens_issued", 0) + 1)
    log.info("stream token for %s on %s", camera, ctx.property)
    return Response(201, json.dumps(issued), {}, "application/json")


@plugin.health
async def health(ctx: Context) -> dict:
    return {"ok": True}


if __name__ == "__main__":
    plugin.run()
