"""Cameras served by tests on 127.0.0.1: an HTTP snapshot camera and an MJPEG camera (raw trio
sockets), and a short video written with PyAV. Each counts the connections it accepted and can
go away and come back on the same port."""

from __future__ import annotations

import base64
import io
import socket
from fractions import Fraction
from pathlib import Path

import av
import trio
from PIL import Image


def make_jpeg(width: int, height: int, shade: int = 0) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (width, height), (shade % 256, 80, 160)).save(out, format="JPEG")
    return out.getvalue()


def write_video(path: Path, frames: int = 10, width: int = 64, height: int = 48, fps: int = 10):
    with av.open(str(path), "w") as container:
        stream = container.add_stream("mpeg4", rate=fps)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        stream.time_base = Fraction(1, fps)
        for i in range(frames):
            image = Image.new("RGB", (width, height), (i * 20 % 256, 100, 50))
            frame = av.VideoFrame.from_image(image)
            frame.pts = i
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)


class FakeCamera:
    """A camera on 127.0.0.1; `up()` listens (the same port every time), `down()` closes the
    listener and every connection; `connections` counts accepted connections."""

    def __init__(self, frames: list[bytes], auth: tuple[str, str] | None = None) -> None:
        self.frames = frames
        self.auth = auth
        self.connections = 0
        self.requests = 0
        self.refused = 0
        self.port = 0
        self._scope: trio.CancelScope | None = None
        self._nursery: trio.Nursery | None = None

    async def run(self, *, task_status=trio.TASK_STATUS_IGNORED):
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            await nursery.start(self._serve)
            task_status.started(self)
            await trio.sleep_forever()  # the camera may go down and come back up

    async def _serve(self, *, task_status=trio.TASK_STATUS_IGNORED):
        with trio.CancelScope() as scope:
            self._scope = scope
            sock = trio.socket.socket()
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            await sock.bind(("127.0.0.1", self.port))
            sock.listen(64)
            self.port = sock.getsockname()[1]
            listener = trio.SocketListener(sock)
            async with trio.open_nursery() as conns:
                task_status.started()
                try:
                    while True:
                        stream = await listener.accept()
                        self.connections += 1
                        conns.start_soon(self._connection, stream)
                finally:
                    await listener.aclose()

    async def down(self):
        assert self._scope is not None
        self._scope.cancel()
        await trio.sleep(0.05)

    async def up(self):
        assert self._nursery is not None
        await self._nursery.start(self._serve)

    def stop(self):
        if self._nursery is not None:
            self._nursery.cancel_scope.cancel()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def _read_request(self, stream, buf: bytearray) -> dict[str, str] | None:
        while b"\r\n\r\n" not in buf:
            data = await stream.receive_some(65536)
            if not data:
                return None
            buf += data
        head, _, rest = bytes(buf).partition(b"\r\n\r\n")
        buf[:] = rest
        lines = head.decode("latin-1").split("\r\n")
        headers = {
            k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])
        }
        headers[":path"] = lines[0].split(" ")[1]
        return headers

    def _authorized(self, headers: dict[str, str]) -> bool:
        if self.auth is None:
            return True
        expected = "Basic " + base64.b64encode(":".join(self.auth).encode()).decode()
        return headers.get("authorization") == expected

    async def _connection(self, stream):
        buf = bytearray()
        try:
            async with stream:
                while True:
                    headers = await self._read_request(stream, buf)
                    if headers is None:
                        return
                    self.requests += 1
                    if not self._authorized(headers):
                        self.refused += 1
                        await stream.send_all(
                            b"HTTP/1.1 401 Unauthorized\r\nContent-Length: 0\r\n"
                            b'WWW-Authenticate: Basic realm="cam"\r\n\r\n'
                        )
                        continue
                    if not await self.respond(stream, headers):
                        return
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            return

    async def respond(self, stream, headers) -> bool:
        raise NotImplementedError


class SnapshotCamera(FakeCamera):
    """GET anything: the next JPEG of `frames`, keep-alive."""

    async def respond(self, stream, headers) -> bool:
        jpeg = self.frames[self.requests % len(self.frames)]
        await stream.send_all(
            b"HTTP/1.1 200 OK\r\nContent-Type: image/jpeg\r\n"
            b"Content-Length: %d\r\n\r\n" % len(jpeg) + jpeg
        )
        return True


class MjpegCamera(FakeCamera):
    """GET anything: an endless multipart stream of `frames`, `fps` a second."""

    fps = 20.0

    async def respond(self, stream, headers) -> bool:
        await stream.send_all(
            b"HTTP/1.1 200 OK\r\nContent-Type: multipart/x-mixed-replace; boundary=camframe\r\n"
            b"Connection: close\r\n\r\n"
        )
        n = 0
        while True:
            jpeg = self.frames[n % len(self.frames)]
            n += 1
            await stream.send_all(
                b"--camframe\r\nContent-Type: image/jpeg\r\nContent-Length: %d\r\n\r\n" % len(jpeg)
                + jpeg
                + b"\r\n"
            )
            await trio.sleep(1 / self.fps)
