import contextlib

import msgspec
import pytest
from hypothesis import given
from hypothesis import strategies as st

from pentarun.errors import ProtocolError
from pentarun.ipc.codec import FrameDecoder, encode_frame
from pentarun.ipc.messages import (
    Call,
    CoreMessage,
    Failure,
    Hello,
    Log,
    Reply,
    WorkerMessage,
)

json_scalars = st.none() | st.booleans() | st.integers(-(2**63), 2**63 - 1) | st.text(max_size=20)
json_values = st.recursive(
    json_scalars,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=12,
)

worker_messages = st.one_of(
    st.builds(Reply, id=st.integers(0, 2**31), value=json_values),
    st.builds(
        Failure, id=st.integers(0, 2**31), code=st.text(max_size=10), message=st.text(max_size=40)
    ),
    st.builds(Log, level=st.integers(0, 50), logger=st.text(max_size=10), message=st.text()),
    st.builds(Hello, protocol=st.integers(0, 9), pid=st.integers(1, 2**22)),
)


@given(st.lists(worker_messages, max_size=20), st.lists(st.integers(1, 64), max_size=40))
def test_any_split_and_merge_of_frames_round_trips(messages, cuts):
    stream = b"".join(encode_frame(m) for m in messages)
    decoder: FrameDecoder[WorkerMessage] = FrameDecoder(WorkerMessage)
    out = []
    pos = 0
    for cut in cuts:
        out += decoder.feed(stream[pos : pos + cut])
        pos += cut
    out += decoder.feed(stream[pos:])
    assert out == messages
    assert decoder.pending == 0


@given(st.binary(max_size=300))
def test_garbage_never_crashes_only_protocol_error(data):
    decoder: FrameDecoder[WorkerMessage] = FrameDecoder(WorkerMessage, max_frame=1024)
    with contextlib.suppress(ProtocolError):
        decoder.feed(data)


def test_oversized_frame_is_refused_before_buffering():
    decoder: FrameDecoder[WorkerMessage] = FrameDecoder(WorkerMessage, max_frame=1000)
    with pytest.raises(ProtocolError) as info:
        decoder.feed((1001).to_bytes(4, "big"))
    assert info.value.details["frame_length"] == 1001


def test_print_output_on_the_channel_is_a_protocol_error():
    decoder: FrameDecoder[WorkerMessage] = FrameDecoder(WorkerMessage)
    with pytest.raises(ProtocolError, match="frame length"):
        decoder.feed(b"debug: hello\n")


def test_zero_length_frame_is_refused():
    decoder: FrameDecoder[WorkerMessage] = FrameDecoder(WorkerMessage)
    with pytest.raises(ProtocolError):
        decoder.feed(b"\x00\x00\x00\x00")


def test_core_message_is_not_accepted_from_a_worker():
    frame = encode_frame(Call(id=1, handler="x", property="p"))
    with pytest.raises(ProtocolError, match="undecodable"):
        FrameDecoder(WorkerMessage).feed(frame)
    assert FrameDecoder(CoreMessage).feed(frame) == [Call(id=1, handler="x", property="p")]


def test_unknown_fields_are_refused():
    payload = msgspec.msgpack.encode({"kind": "reply", "id": 1, "sneaky": True})
    with pytest.raises(ProtocolError):
        FrameDecoder(WorkerMessage).feed(len(payload).to_bytes(4, "big") + payload)


def test_outgoing_oversized_frame_is_refused():
    with pytest.raises(ProtocolError):
        encode_frame(Reply(id=1, value="x" * 2000), max_frame=1000)


def test_a_frame_nested_100000_deep_is_a_protocol_error():
    head = msgspec.msgpack.encode({"kind": "reply", "id": 1, "value": None})[:-1]
    payload = head + b"\x91" * 100_000 + b"\x90"  # the value: arrays in arrays, 100,000 deep
    frame = len(payload).to_bytes(4, "big") + payload
    with pytest.raises(ProtocolError, match="nested too deeply"):
        FrameDecoder(WorkerMessage).feed(frame)
