import socket

import pytest
import trio
import trio.testing

from pentarun.errors import ProtocolError
from pentarun.ipc.channel import Channel, ChannelClosed
from pentarun.ipc.messages import Call, CoreMessage, Reply, WorkerMessage


async def test_many_queued_messages_arrive_in_order():
    left, right = trio.testing.memory_stream_pair()
    core: Channel[WorkerMessage] = Channel(left, WorkerMessage)
    worker: Channel[CoreMessage] = Channel(right, CoreMessage)
    got: list[CoreMessage] = []
    done = trio.Event()

    def collect(message: CoreMessage) -> None:
        got.append(message)
        if len(got) == 500:
            done.set()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(core.run, lambda m: None)
        nursery.start_soon(worker.run, collect)
        for i in range(500):
            core.send(Call(id=i, handler="h", property="p"))
        with trio.fail_after(5):
            await done.wait()
        nursery.cancel_scope.cancel()
    assert [m.id for m in got] == list(range(500))  # type: ignore[union-attr]
    assert core.frames_sent == 500


async def test_run_returns_on_eof_and_send_then_fails():
    left, right = trio.testing.memory_stream_pair()
    core: Channel[WorkerMessage] = Channel(left, WorkerMessage)
    await right.aclose()
    with trio.fail_after(5):
        await core.run(lambda m: None)
    with pytest.raises(ChannelClosed):
        core.send(Call(id=1, handler="h", property="p"))


async def test_garbage_from_peer_raises_protocol_error():
    left, right = trio.testing.memory_stream_pair()
    core: Channel[WorkerMessage] = Channel(left, WorkerMessage)
    await right.send_all(b"hello world, not a frame")
    with trio.fail_after(5), pytest.RaisesGroup(ProtocolError):
        await core.run(lambda m: None)


async def test_eof_inside_a_frame_is_a_protocol_error():
    left, right = trio.testing.memory_stream_pair()
    core: Channel[WorkerMessage] = Channel(left, WorkerMessage)
    await right.send_all(b"\x00\x00\x00\x10abc")
    await right.aclose()
    with trio.fail_after(5), pytest.RaisesGroup(ProtocolError):
        await core.run(lambda m: None)


async def test_reply_roundtrip_between_two_channels():
    left, right = trio.testing.memory_stream_pair()
    core: Channel[WorkerMessage] = Channel(left, WorkerMessage)
    worker: Channel[CoreMessage] = Channel(right, CoreMessage)
    replies: list[WorkerMessage] = []
    got_reply = trio.Event()

    def collect(message: WorkerMessage) -> None:
        replies.append(message)
        got_reply.set()

    def answer(message: CoreMessage) -> None:
        assert isinstance(message, Call)
        worker.send(Reply(id=message.id, value={"echo": message.params}))

    async with trio.open_nursery() as nursery:
        nursery.start_soon(core.run, collect)
        nursery.start_soon(worker.run, answer)
        core.send(Call(id=7, handler="h", property="p", params={"a": 1}))
        with trio.fail_after(5):
            await got_reply.wait()
        nursery.cancel_scope.cancel()
    assert replies == [Reply(id=7, value={"echo": {"a": 1}})]


async def test_direct_writes_that_fill_the_socket_buffer_keep_frame_order():
    a, b = socket.socketpair()
    a.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
    sender: Channel[WorkerMessage] = Channel(
        trio.SocketStream(trio.socket.from_stdlib_socket(a)), WorkerMessage
    )
    receiver: Channel[CoreMessage] = Channel(
        trio.SocketStream(trio.socket.from_stdlib_socket(b)), CoreMessage
    )
    payload = {"blob": "x" * 10_000}
    for i in range(50):  # nobody reads yet: the kernel buffer fills, the rest is queued
        sender.send(Call(id=i, handler="h", property="p", params=payload))
    got: list[CoreMessage] = []
    done = trio.Event()

    def collect(message: CoreMessage) -> None:
        got.append(message)
        if len(got) == 50:
            done.set()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(sender.run, lambda m: None)
        nursery.start_soon(receiver.run, collect)
        with trio.fail_after(5):
            await done.wait()
        nursery.cancel_scope.cancel()
    assert [m.id for m in got] == list(range(50))  # type: ignore[union-attr]
    assert all(m.params == payload for m in got)  # type: ignore[union-attr]


async def test_a_peer_that_stops_reading_ends_the_channel():
    """The worker shut down its read side but keeps its write side open: `run` returns."""
    core_sock, worker_sock = socket.socketpair()
    worker_sock.shutdown(socket.SHUT_RD)
    core: Channel[WorkerMessage] = Channel(
        trio.SocketStream(trio.socket.from_stdlib_socket(core_sock)), WorkerMessage
    )
    async with trio.open_nursery() as nursery:
        nursery.start_soon(core.run, lambda m: None)
        with trio.fail_after(5):
            while not core.closed:
                core.send_if_open(Call(id=1, handler="h", property="p", params={"x": "y" * 4096}))
                await trio.sleep(0.001)
    worker_sock.close()
