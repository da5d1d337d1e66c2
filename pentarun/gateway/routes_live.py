"""Admin routes that stream: a plugin's log lines as they come, a camera's picture.

    GET /api/plugins/{key}/logs/stream?level=WARNING    server-sent events, one per log line
    GET /api/properties/{pid}/cameras/{cid}/snapshot.jpg a current frame (image/jpeg)
    GET /api/properties/{pid}/cameras/{cid}/mjpeg        a live MJPEG preview

The log stream first sends the lines the supervisor keeps (`supervisor.log_lines_kept`), then
every new one, each as an unnamed event whose data is `{"at", "level", "logger", "message"}`
(so a browser's EventSource gets them all through `onmessage`); `level` keeps that level and
above (`OUTPUT`, a worker's stray stdout, counts as INFO). The supervisor keeps a worker's
log in memory and announces no new line, so the stream looks at that window every
LOG_TICK_S (a memory read, no store access) and sends what is new: a line is on the wire
within LOG_TICK_S of its arrival. A worker that logs more lines between two looks than the
window holds has some of them turned over unseen: the stream then sends a `gap` event before
the window's lines (the kept window itself is the supervisor's and loses nothing more).

Cameras: the property must be one the operator may see (else 404, as if it did not exist).
Frames come from the camera hub (`cameras/hub.py`): its cached latest frame, never a round
trip to the camera; an offline camera's snapshot is 503 `camera_offline`.
MJPEG previews are bounded: MAX_PREVIEWS at once on the server (429 beyond), each
PREVIEW_FPS frames a second, at most PREVIEW_MAX_S long (the browser reconnects if it wants
more).
"""

from __future__ import annotations

import weakref
from collections.abc import AsyncIterator, Callable

import msgspec
import trio
from quart import Blueprint, Response, current_app, request

from ..cameras.feed import CameraOffline
from ..errors import BadRequest, RateLimited
from ..security.operators import READ
from ..store import records
from ..supervisor.telemetry import LogLine
from .app import current_services, operator
from .params import plugin_key
from .routes_properties import visible_camera

bp = Blueprint("live", __name__)

LOG_TICK_S = 0.25
KEEPALIVE_S = 15.0
LEVELS = {"DEBUG": 10, "INFO": 20, "OUTPUT": 20, "WARNING": 30, "ERROR": 40, "CRITICAL": 50}
MAX_PREVIEWS = 16
PREVIEW_FPS = 2.0
PREVIEW_MAX_S = 600.0
BOUNDARY = "pentarunframe"


def level_filter(raw: str | None) -> int:
    """The lowest level a stream sends (a `level` query parameter; absent: everything)."""
    if raw is None or raw == "":
        return 0
    value = LEVELS.get(raw.upper())
    if value is None:
        raise BadRequest(
            f"level must be one of {sorted(set(LEVELS) - {'OUTPUT'})}",
            {"parameter": "level", "value": raw[:40]},
        )
    return value


def passes(line: LogLine, lowest: int) -> bool:
    return LEVELS.get(line.level.upper(), 20) >= lowest


def new_lines(window: list[LogLine], last: LogLine | None) -> tuple[list[LogLine], bool]:
    """The lines of `window` after `last` (by identity), and whether `last` had already left
    the window (lines may have been missed)."""
    if last is None:
        return window, False
    for index in range(len(window) - 1, -1, -1):
        if window[index] is last:
            return window[index + 1 :], False
    return window, True


def _event(line: LogLine) -> bytes:
    data = {"at": line.at, "level": line.level, "logger": line.logger, "message": line.message}
    return b"data: " + msgspec.json.encode(data) + b"\n\n"


@bp.get("/api/plugins/<key>/logs/stream")
@operator(READ)
async def log_stream(op: records.OperatorRow, key: str) -> Response:
    key = plugin_key(key)
    lowest = level_filter(request.args.get("level"))
    services = current_services()
    services.registry.plugin(key)

    async def lines() -> AsyncIterator[bytes]:
        yield b": connected\n\n"
        last: LogLine | None = None
        actor = None
        idle = 0.0
        while True:
            current = services.supervisor.directory.get(key)
            if current is not actor:  # a new actor (reinstalled): its window from the start
                actor, last = current, None
            window = actor.logs if actor is not None else []
            fresh, gap = new_lines(window, last)
            if gap:
                yield b"event: gap\ndata: {}\n\n"
            sent = False
            for line in fresh:
                if passes(line, lowest):
                    yield _event(line)
                    sent = True
            if window:
                last = window[-1]
            idle = 0.0 if sent else idle + LOG_TICK_S
            if idle >= KEEPALIVE_S:
                idle = 0.0
                yield b": keep-alive\n\n"
            await trio.sleep(LOG_TICK_S)

    response = Response(
        lines(), content_type="text/event-stream", headers={"Cache-Control": "no-store"}
    )
    response.timeout = None
    return response


@bp.get("/api/properties/<pid>/cameras/<cid>/snapshot.jpg")
@operator(READ)
async def snapshot(op: records.OperatorRow, pid: str, cid: str) -> Response:
    camera = visible_camera(op, pid, cid)
    hub = current_services().cameras
    jpeg = await hub.snapshot(camera)
    return Response(jpeg, content_type="image/jpeg", headers={"Cache-Control": "no-store"})


class _Previews:
    """Previews open on this server: a lease is taken when the request is answered (so a
    burst of requests cannot all pass the check) and given back when its stream ends — or
    when its stream object goes away without ever being read (a client gone before the
    body was sent)."""

    def __init__(self) -> None:
        self.open = 0

    def lease(self) -> Callable[[], None]:
        self.open += 1
        given_back = False

        def give_back() -> None:
            nonlocal given_back
            if not given_back:
                given_back = True
                self.open -= 1

        return give_back


def _previews() -> _Previews:
    found = current_app.extensions.get("pentarun.previews")
    if not isinstance(found, _Previews):
        found = current_app.extensions["pentarun.previews"] = _Previews()
    return found


@bp.get("/api/properties/<pid>/cameras/<cid>/mjpeg")
@operator(READ)
async def mjpeg(op: records.OperatorRow, pid: str, cid: str) -> Response:
    camera = visible_camera(op, pid, cid)
    hub = current_services().cameras
    previews = _previews()
    if previews.open >= MAX_PREVIEWS:
        raise RateLimited(
            f"{MAX_PREVIEWS} camera previews are open on this server; close one",
            {"retry_after_s": 5},
        )

    give_back = previews.lease()

    async def frames() -> AsyncIterator[bytes]:
        try:
            with trio.move_on_after(PREVIEW_MAX_S):
                seq = 0
                while True:
                    try:
                        frame = await hub.next_frame(camera, seq)
                    except CameraOffline:
                        return  # the browser shows the stream ended; it may reconnect
                    seq, jpeg = frame.seq, frame.jpeg
                    yield (
                        (
                            f"--{BOUNDARY}\r\nContent-Type: image/jpeg\r\n"
                            f"Content-Length: {len(jpeg)}\r\n\r\n"
                        ).encode()
                        + jpeg
                        + b"\r\n"
                    )
                    await trio.sleep(1 / PREVIEW_FPS)
        finally:
            give_back()

    stream = frames()
    weakref.finalize(stream, give_back)  # a stream never read gives its lease back too
    response = Response(
        stream,
        content_type=f"multipart/x-mixed-replace; boundary={BOUNDARY}",
        headers={"Cache-Control": "no-store"},
    )
    response.timeout = None
    return response
