"""The worker side of the protocol, in-process over a real socketpair, with a fake core."""

import logging
import socket
import threading
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import msgspec
import trio

from pentarun.ipc.channel import Channel
from pentarun.ipc.messages import (
    PROTOCOL_VERSION,
    STREAM_CREDIT,
    Call,
    Cancel,
    CoreCall,
    CoreFailure,
    CoreResult,
    Failure,
    HealthProbe,
    HealthReport,
    Hello,
    HttpReply,
    Log,
    PlatformEvent,
    Ready,
    Reply,
    Stop,
    StreamChunk,
    StreamCredit,
    StreamEnd,
    StreamStart,
    Welcome,
    WorkerMessage,
)
from pentarun.sdk import Context, Error, Plugin, Response, Stream
from pentarun.sdk.plugin import _Worker

plugin = Plugin()
stopped: list[str] = []


@plugin.handler("store")
async def store(ctx: Context, params: dict) -> dict:
    await ctx.store.set("k", params["v"])
    return {"got": await ctx.store.get("k"), "property": ctx.property}


@plugin.handler("raw")
async def raw(ctx: Context, params: dict) -> Response:
    return Response(202, "text", {"X-A": "b"}, "text/plain")


@plugin.handler("error")
async def error(ctx: Context, params: dict) -> dict:
    raise Error("nope", "not allowed", 403)


@plugin.handler("boom")
async def boom(ctx: Context, params: dict) -> dict:
    raise RuntimeError("kaput")


@plugin.handler("log_in_task")
async def log_in_task(ctx: Context, params: dict) -> dict:
    async with trio.open_nursery() as nursery:  # tasks a handler starts serve its call too
        nursery.start_soon(_log_error, "from a task of the call")
    raise RuntimeError("and then it broke")


async def _log_error(text: str) -> None:
    logging.getLogger("test.plugin").error(text)


@plugin.handler("log_in_thread")
async def log_in_thread(ctx: Context, params: dict) -> dict:
    thread = threading.Thread(target=logging.getLogger("test.plugin").error, args=("own thread",))
    thread.start()
    await trio.to_thread.run_sync(thread.join)
    return {}


@plugin.on_event("camera.motion")
async def on_motion(ctx: Context, event: dict) -> None:
    raise RuntimeError("event handler broke")


@plugin.handler("forever")
async def forever(ctx: Context, params: dict) -> dict:
    await trio.sleep_forever()
    return {}


@plugin.handler("unencodable")
async def unencodable(ctx: Context, params: dict) -> object:
    return {"x": object()}


@plugin.handler("denied")
async def denied(ctx: Context, params: dict) -> dict:
    return await ctx.core.call("cameras.list")


@plugin.on_stop
async def on_stop(ctx: Context) -> None:
    stopped.append("yes")


class FakeCore:
    """Plays the core: answers the handshake and store calls, records the rest."""

    def __init__(self, stream: trio.SocketStream) -> None:
        self.channel: Channel[WorkerMessage] = Channel(stream, WorkerMessage)
        self.inbox_send, self.inbox = trio.open_memory_channel[WorkerMessage](100)
        self.state: dict[str, object] = {}

    def on_message(self, message: WorkerMessage) -> None:
        match message:
            case Hello():
                self.channel.send(Welcome(PROTOCOL_VERSION, "t", "tok", 0.0, {}))
            case CoreCall(name="store.set", params=params, token="tok"):
                self.state[params["key"]] = params["value"]
                self.channel.send(CoreResult(message.id, None))
            case CoreCall(name="store.get", params=params):
                value = {
                    "found": params["key"] in self.state,
                    "value": self.state.get(params["key"]),
                }
                self.channel.send(CoreResult(message.id, value))
            case CoreCall():
                self.channel.send(CoreFailure(message.id, "scope_denied", "no", 403))
            case _:
                self.inbox_send.send_nowait(message)

    async def next(self, kind: type) -> WorkerMessage:
        with trio.fail_after(5):
            while True:
                message = await self.inbox.receive()
                if isinstance(message, kind):
                    return message


@asynccontextmanager
async def connected_worker() -> AsyncIterator[FakeCore]:
    """The test plugin's worker in-process, past its handshake, facing a FakeCore."""
    core_sock, worker_sock = socket.socketpair()
    core = FakeCore(trio.SocketStream(trio.socket.from_stdlib_socket(core_sock)))
    async with trio.open_nursery() as nursery:
        nursery.start_soon(core.channel.run, core.on_message)
        nursery.start_soon(_Worker(plugin, 1 << 20).serve, worker_sock)
        await core.next(Ready)
        yield core


async def test_worker_protocol_end_to_end():
    async with connected_worker() as core:
        core.channel.send(Call(1, "store", "p1", {"v": [1]}))
        assert await core.next(Reply) == Reply(1, {"got": [1], "property": "p1"})
        core.channel.send(Call(2, "raw", "p1"))
        assert await core.next(HttpReply) == HttpReply(2, 202, b"text", "text/plain", {"X-A": "b"})
        core.channel.send(Call(3, "error", "p1"))
        assert await core.next(Failure) == Failure(3, "nope", "not allowed", 403)
        core.channel.send(Call(4, "boom", "p1"))
        failure = await core.next(Failure)
        assert (failure.code, failure.status) == ("handler_error", 500)
        assert failure.message == "RuntimeError: kaput"
        log = await core.next(Log)
        assert log.level == logging.ERROR and "kaput" in log.message
        assert log.in_call  # the caller's failure: it does not feed the error-storm rule
        core.channel.send(Call(5, "missing", "p1"))
        assert (await core.next(Failure)).code == "unknown_handler"
        core.channel.send(Call(6, "unencodable", "p1"))
        assert (await core.next(Failure)).code == "bad_reply"
        core.channel.send(Call(7, "denied", "p1"))
        assert (await core.next(Failure)).code == "scope_denied"
        core.channel.send(Call(8, "forever", "p1", deadline_ms=50))
        core.channel.send(Call(9, "forever", "p1"))
        core.channel.send(Cancel(9))
        core.channel.send(HealthProbe(10))
        assert await core.next(HealthReport) == HealthReport(10, True, {"ok": True})
        core.channel.send(Stop())
    assert stopped == ["yes"]


@plugin.handler("endless")
async def endless(ctx: Context, params: dict) -> Stream:
    async def chunks():
        n = 0
        while True:
            n += 1
            yield f"chunk {n}".encode()

    return Stream(chunks(), "text/plain", 200, {"X-S": "1"})


async def test_streams_respect_credit_and_end_on_cancel():
    async with connected_worker() as core:
        core.channel.send(Call(1, "endless", "p1", deadline_ms=50))
        start = await core.next(StreamStart)
        assert (start.status, start.content_type, start.headers) == (
            200,
            "text/plain",
            {"X-S": "1"},
        )
        got = [await core.next(StreamChunk) for _ in range(STREAM_CREDIT)]
        assert [c.data for c in got] == [f"chunk {n}".encode() for n in range(1, STREAM_CREDIT + 1)]
        await trio.sleep(0.2)  # no credit, no chunks (and the 50 ms deadline no longer applies)
        assert core.inbox.statistics().current_buffer_used == 0
        core.channel.send(StreamCredit(1, 2))
        assert (await core.next(StreamChunk)).data == f"chunk {STREAM_CREDIT + 1}".encode()
        assert (await core.next(StreamChunk)).data == f"chunk {STREAM_CREDIT + 2}".encode()
        core.channel.send(Cancel(1))
        assert await core.next(StreamEnd) == StreamEnd(1, "")
        core.channel.send(Stop())


async def _answer_and_logs(core: FakeCore, logs: int) -> tuple[WorkerMessage, list[Log]]:
    """The next Failure or Reply and `logs` Log records, in whatever order they come."""
    answer, records = None, []
    with trio.fail_after(5):
        while answer is None or len(records) < logs:
            message = await core.inbox.receive()
            if isinstance(message, Log):
                records.append(message)
            elif isinstance(message, Failure | Reply):
                answer = message
    return answer, records


async def test_records_logged_while_serving_a_call_are_marked_in_call():
    async with connected_worker() as core:
        core.channel.send(Call(1, "log_in_task", "p1"))
        failure, (task_log, handler_log) = await _answer_and_logs(core, 2)
        assert failure == Failure(1, "handler_error", "RuntimeError: and then it broke", 500)
        assert (task_log.message, task_log.in_call) == ("from a task of the call", True)
        assert "and then it broke" in handler_log.message and handler_log.in_call
        core.channel.send(Call(2, "log_in_thread", "p1"))
        reply, [thread_log] = await _answer_and_logs(core, 1)
        assert reply == Reply(2, {})
        # a thread the plugin starts itself is not the call's: its records count
        assert (thread_log.message, thread_log.in_call) == ("own thread", False)
        core.channel.send(Stop())


async def test_records_logged_outside_calls_are_not_marked():
    async with connected_worker() as core:
        core.channel.send(PlatformEvent(7, "camera.motion", "p1", {}))
        log = await core.next(Log)
        assert log.level == logging.ERROR and "event handler broke" in log.message
        assert log.in_call is False
        core.channel.send(Stop())


def test_in_call_is_omitted_on_the_wire_unless_set():
    plain = msgspec.msgpack.encode(Log(40, "x", "m", 1.0))
    assert b"in_call" not in plain
    older = msgspec.msgpack.encode({"kind": "log", "level": 40, "logger": "x", "message": "m"})
    assert msgspec.msgpack.decode(older, type=WorkerMessage) == Log(40, "x", "m")
    assert msgspec.msgpack.decode(msgspec.msgpack.encode(Log(40, "x", "m", 1.0, True))).get(
        "in_call"
    )
