"""Payloads as worker functions want them: bytes, or (``@zero_copy``) a read-only
memoryview of the received frame; results that are the payload go on by reference."""

from __future__ import annotations

import array
import uuid
from collections.abc import Iterator

import pytest
import zmq
from zmq.utils.garbage import gc

from palm import zero_copy
from palm.serve.views import as_call_payloads, is_zero_copy, kept_view, restore_received
from palm.serve.worker import Worker
from palm.servers import MuxWorker
from palm.wire.messages import job_message
from palm.wire.protocol import Header, decode, jobs_in
from palm.wire.sockets import context, recv_forwarded, send_frames

BIG = bytes(range(256)) * 4096 + b"tail"  # a little over 1 MiB


class _Views(Worker):
    def __init__(self) -> None:
        super().__init__(
            "views", push_address="tcp://127.0.0.1:1", pull_address="tcp://127.0.0.1:2"
        )
        self.seen: list[object] = []

    @zero_copy
    def look(self, message: memoryview) -> memoryview:
        self.seen.append(message)
        return message

    @zero_copy
    def tail(self, message: memoryview) -> memoryview:
        return message[4:]

    @zero_copy
    def mutable(self, message: memoryview) -> memoryview:
        return memoryview(bytearray(message))

    @zero_copy
    def words(self, message: memoryview) -> memoryview:
        return memoryview(array.array("I", [1, 2, 3]))

    def plain(self, message: bytes) -> bytes:
        self.seen.append(message)
        return message

    def equal(self, message: bytes) -> bytes:
        return bytes(bytearray(message))  # the same bytes, another object


Pair = tuple[zmq.Socket[bytes], zmq.Socket[bytes]]


@pytest.fixture
def pair() -> Iterator[Pair]:
    address = f"inproc://palm-test-views-{uuid.uuid4().hex}"
    a, b = context().socket(zmq.PAIR), context().socket(zmq.PAIR)
    a.bind(address)
    b.connect(address)
    try:
        yield a, b
    finally:
        a.close(0)
        b.close(0)


def _received(pair: Pair, function: str, *payloads: bytes) -> tuple[Header, list[bytes]]:
    """A JOB message sent over ``pair`` and received as a worker receives it."""
    a, b = pair
    send_frames(a, job_message(b"client", 1, function, list(payloads), pack=False))
    header, frames = decode(recv_forwarded(b))
    return header, jobs_in(header, frames)


def test_the_mark_is_seen_on_the_function_and_on_the_bound_method() -> None:
    worker = _Views()
    assert is_zero_copy(_Views.look) and is_zero_copy(worker.look)
    assert not is_zero_copy(worker.plain) and not is_zero_copy(len)


def _sent_without_lending(pair: Pair, out: list[bytes], expected: list[bytes]) -> None:
    """``out`` sent on, and received as ``expected``, with nothing lent to pyzmq's
    garbage thread (a lent buffer would add a reference there)."""
    a, b = pair
    lent = len(gc.refs)
    send_frames(b, [b"head", *out])
    assert len(gc.refs) == lent
    assert a.recv_multipart() == [b"head", *expected]


def test_a_zero_copy_function_gets_a_read_only_view_of_the_frame_itself(pair: Pair) -> None:
    worker = _Views()
    header, payloads = _received(pair, "look", BIG, b"small")
    reply, out = worker.run_job(header, payloads)
    assert not reply.errors
    big, small = worker.seen
    assert type(big) is memoryview and big.readonly and isinstance(big.obj, zmq.Frame)
    assert type(small) is memoryview and small.readonly and bytes(small) == b"small"
    with pytest.raises(TypeError):
        big[0] = 1
    # the result is the view: it goes on as the received frame, nothing lent
    result: object = out[0]
    assert isinstance(result, memoryview) and result.obj is big.obj
    _sent_without_lending(pair, out, [BIG, b"small"])


def test_a_slice_of_the_view_goes_out_as_that_part(pair: Pair) -> None:
    worker = _Views()
    header, payloads = _received(pair, "tail", BIG)
    _, out = worker.run_job(header, payloads)
    a, b = pair
    send_frames(b, [b"head", *out])
    assert a.recv_multipart() == [b"head", BIG[4:]]


def test_views_of_mutable_or_wide_buffers_are_copied_to_bytes(pair: Pair) -> None:
    worker = _Views()
    for function, expected in [("mutable", BIG), ("words", array.array("I", [1, 2, 3]).tobytes())]:
        header, payloads = _received(pair, function, BIG)
        reply, out = worker.run_job(header, payloads)
        assert not reply.errors
        assert type(out[0]) is bytes and out[0] == expected


def test_a_bytes_function_gets_bytes_and_its_echo_goes_out_by_reference(pair: Pair) -> None:
    worker = _Views()
    header, payloads = _received(pair, "plain", BIG, b"small")
    _, out = worker.run_job(header, payloads)
    assert [type(seen) for seen in worker.seen] == [bytes, bytes]
    sent: object = out[0]
    assert isinstance(sent, memoryview) and isinstance(sent.obj, zmq.Frame)  # the received frame
    assert out[1] == b"small"
    _sent_without_lending(pair, out, [BIG, b"small"])


def test_an_equal_result_that_is_another_object_goes_as_it_is(pair: Pair) -> None:
    worker = _Views()
    header, payloads = _received(pair, "equal", BIG)
    _, out = worker.run_job(header, payloads)
    assert type(out[0]) is bytes and out[0] == BIG


def test_payload_conversion_and_restoring() -> None:
    frame = zmq.Frame(BIG)
    view = frame.buffer
    given, received = as_call_payloads(len, [b"a", view])  # type: ignore[list-item]
    assert given[0] == b"a" and type(given[1]) is bytes and given[1] == BIG
    assert restore_received([given[1], b"x", given[0]], received) == [view, b"x", b"a"]
    assert as_call_payloads(len, [b"a", b"b"]) == ([b"a", b"b"], None)
    assert restore_received([b"a"], None) == [b"a"]


def test_kept_views() -> None:
    frame_view = zmq.Frame(BIG).buffer
    assert kept_view(frame_view) is frame_view
    assert kept_view(memoryview(b"abc")[1:]) is not None
    assert kept_view(memoryview(bytearray(b"abc"))) is None
    flat = kept_view(memoryview(b"abcdefgh").cast("I"))
    assert flat is not None and flat.format == "B" and len(flat) == 8


class _Mux(MuxWorker):
    def parts(self, message: bytes) -> Iterator[bytes]:
        assert type(message) is bytes
        yield message[:3]
        yield message[3:]


def test_a_mux_worker_function_gets_bytes(pair: Pair) -> None:
    worker = _Mux("mux", push_address="tcp://127.0.0.1:1", pull_address="tcp://127.0.0.1:2")
    header, payloads = _received(pair, "parts", BIG)
    reply, out = worker.run_job(header, payloads)
    assert not reply.errors and out == [BIG[:3], BIG[3:]]
