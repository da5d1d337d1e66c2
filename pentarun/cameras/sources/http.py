"""A minimal HTTP/1.1 client for cameras (h11 on trio streams), and the two HTTP sources.

    run_snapshot(url, credentials, publish, settings)  GET a JPEG every `snapshot_interval_s`
                                                       over one kept-alive connection
    run_mjpeg(url, credentials, publish, settings)     one GET whose multipart body is split
                                                       into JPEG parts, relayed as sent

Every read is bounded in time (`read_timeout_s`: a camera that stops sending fails) and in
size (`max_frame_bytes`). Credentials go only into the Authorization header (HTTP Basic);
error messages name the redacted URL and the status, never the header.
"""

from __future__ import annotations

import base64
import ssl
from collections.abc import AsyncIterator
from urllib.parse import urlsplit

import h11
import trio

from ..multipart import MultipartError, MultipartReader, boundary_of
from ..settings import CameraSettings
from ..source import Credentials, redact
from . import Publish, SourceError, is_jpeg

READ_CHUNK = 64 * 1024
MAX_HEAD_BYTES = 64 * 1024


class HttpConnection:
    """One connection to a camera's host; requests go one after the other (keep-alive)."""

    def __init__(self, url: str, credentials: Credentials | None, settings: CameraSettings):
        parts = urlsplit(url)
        self.url = url
        self.shown = redact(url)
        self.https = parts.scheme.lower() == "https"
        self.host = parts.hostname or ""
        self.port = parts.port or (443 if self.https else 80)
        self.target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        self.host_header = parts.netloc
        self.settings = settings
        self._auth: str | None = None
        if credentials is not None:
            raw = f"{credentials.username}:{credentials.password}".encode()
            self._auth = "Basic " + base64.b64encode(raw).decode()
        self._stream: trio.abc.Stream | None = None
        self._conn: h11.Connection | None = None
        self.connections = 0  # how many TCP connections this has opened (tests, metrics)

    async def aclose(self) -> None:
        if self._stream is not None:
            stream, self._stream, self._conn = self._stream, None, None
            with trio.CancelScope(shield=True), trio.move_on_after(1):
                await stream.aclose()

    async def _connect(self) -> None:
        try:
            with trio.fail_after(self.settings.connect_timeout_s):
                stream: trio.abc.Stream = await trio.open_tcp_stream(self.host, self.port)
                if self.https:
                    tls = trio.SSLStream(
                        stream, ssl.create_default_context(), server_hostname=self.host
                    )
                    await tls.do_handshake()
                    stream = tls
        except trio.TooSlowError:
            raise SourceError(f"{self.shown}: no connection within "
                              f"{self.settings.connect_timeout_s:g} s") from None  # fmt: skip
        except (OSError, trio.BrokenResourceError, ssl.SSLError) as exc:
            raise SourceError(f"{self.shown}: cannot connect ({_reason(exc)})") from None
        self._stream, self._conn = stream, h11.Connection(h11.CLIENT)
        self.connections += 1

    async def _send(self, event: h11.Event) -> None:
        assert self._stream is not None and self._conn is not None
        data = self._conn.send(event)
        if data:
            await self._stream.send_all(data)

    async def _next_event(self) -> h11.Event | type[h11.PAUSED] | type[h11.NEED_DATA]:
        assert self._stream is not None and self._conn is not None
        while True:
            event = self._conn.next_event()
            if event is not h11.NEED_DATA:
                return event
            try:
                with trio.fail_after(self.settings.read_timeout_s):
                    data = await self._stream.receive_some(READ_CHUNK)
            except trio.TooSlowError:
                raise SourceError(f"{self.shown}: nothing received for "
                                  f"{self.settings.read_timeout_s:g} s") from None  # fmt: skip
            except (OSError, trio.BrokenResourceError, ssl.SSLError) as exc:
                raise SourceError(f"{self.shown}: connection lost ({_reason(exc)})") from None
            self._conn.receive_data(bytes(data))

    async def get(self) -> tuple[h11.Response, AsyncIterator[bytes]]:
        """Send a GET (reconnecting when the previous connection cannot be reused, or was
        closed by the camera while idle); the response head and its body's chunks (read them
        all before the next `get`)."""
        reused = self._stream is not None
        try:
            return await self._get()
        except SourceError:
            if not reused:
                raise
        await self.aclose()  # a kept-alive connection the camera had closed: once more, fresh
        return await self._get()

    async def _get(self) -> tuple[h11.Response, AsyncIterator[bytes]]:
        if self._conn is not None and self._conn.our_state is h11.DONE:
            try:
                self._conn.start_next_cycle()
            except h11.LocalProtocolError:
                await self.aclose()
        if self._conn is not None and self._conn.our_state is not h11.IDLE:
            await self.aclose()
        if self._stream is None:
            await self._connect()
        headers = [("Host", self.host_header), ("User-Agent", "pentarun"), ("Accept", "*/*")]
        if self._auth is not None:
            headers.append(("Authorization", self._auth))
        try:
            await self._send(h11.Request(method="GET", target=self.target, headers=headers))
            await self._send(h11.EndOfMessage())
            event = await self._next_event()
        except (OSError, trio.BrokenResourceError, ssl.SSLError) as exc:
            await self.aclose()
            raise SourceError(f"{self.shown}: connection lost ({_reason(exc)})") from None
        except h11.ProtocolError:
            await self.aclose()
            raise SourceError(f"{self.shown}: not an HTTP answer") from None
        if not isinstance(event, h11.Response):
            await self.aclose()
            raise SourceError(f"{self.shown}: the connection closed without an answer")
        return event, self._body()

    async def _body(self) -> AsyncIterator[bytes]:
        while True:
            try:
                event = await self._next_event()
            except h11.ProtocolError:
                await self.aclose()
                raise SourceError(f"{self.shown}: a broken HTTP body") from None
            if isinstance(event, h11.Data):
                yield bytes(event.data)
            elif isinstance(event, h11.EndOfMessage):
                if self._conn is not None and self._conn.their_state is h11.MUST_CLOSE:
                    await self.aclose()
                return
            else:  # ConnectionClosed
                await self.aclose()
                raise SourceError(f"{self.shown}: the connection closed in a body")


def _reason(exc: BaseException) -> str:
    """An OS error's reason without its arguments (which could name the address)."""
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    return type(exc).__name__


def _header(response: h11.Response, name: bytes) -> str:
    for key, value in response.headers:
        if key.lower() == name:
            return bytes(value).decode("latin-1")
    return ""


def _check_status(shown: str, response: h11.Response) -> None:
    if response.status_code in (401, 403):
        raise SourceError(f"{shown}: the camera refused the credentials ({response.status_code})")
    if response.status_code != 200:
        raise SourceError(f"{shown}: the camera answered {response.status_code}")


async def run_snapshot(
    url: str,
    credentials: Credentials | None,
    publish: Publish,
    settings: CameraSettings,
    *,
    connection: HttpConnection | None = None,
) -> None:
    """Fetch a JPEG every `snapshot_interval_s` (one kept-alive connection) until it fails."""
    conn = connection or HttpConnection(url, credentials, settings)
    try:
        while True:
            response, body = await conn.get()
            _check_status(conn.shown, response)
            jpeg = bytearray()
            async for chunk in body:
                jpeg += chunk
                if len(jpeg) > settings.max_frame_bytes:
                    await conn.aclose()
                    raise SourceError(
                        f"{conn.shown}: a snapshot larger than {settings.max_frame_bytes} bytes"
                    )
            if not is_jpeg(bytes(jpeg[:2])):
                raise SourceError(f"{conn.shown}: the snapshot is not a JPEG")
            publish(bytes(jpeg))
            await trio.sleep(settings.snapshot_interval_s)
    finally:
        await conn.aclose()


async def run_mjpeg(
    url: str, credentials: Credentials | None, publish: Publish, settings: CameraSettings
) -> None:
    """Relay the JPEG parts of one multipart stream as they come, until it fails or ends."""
    conn = HttpConnection(url, credentials, settings)
    try:
        response, body = await conn.get()
        _check_status(conn.shown, response)
        try:
            reader = MultipartReader(
                boundary_of(_header(response, b"content-type")), settings.max_frame_bytes
            )
            async for chunk in body:
                for part in reader.feed(chunk):
                    if is_jpeg(part):  # a part of another type (text, say) is skipped
                        publish(part)
        except MultipartError as exc:
            raise SourceError(f"{conn.shown}: {exc}") from None
        raise SourceError(f"{conn.shown}: the stream ended")
    finally:
        await conn.aclose()
