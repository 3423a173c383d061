"""Large frames: one received in place goes on by reference, whole and unchanged;
large results of small jobs go a frame each."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest
import zmq
from zmq.utils.garbage import gc

from palm.serve.worker import Worker
from palm.wire.messages import job_message
from palm.wire.protocol import decode, jobs_in
from palm.wire.sockets import context, recv_forwarded, send_frames

BIG = bytes(range(256)) * 4096 + b"tail"  # a little over 1 MiB, no two 256-byte runs alike


@pytest.fixture
def pipes() -> Iterator[tuple[zmq.Socket[bytes], ...]]:
    """Three PAIR sockets chained a -> b, b -> c (b plays the master)."""
    socks = [context().socket(zmq.PAIR) for _ in range(4)]
    first, second = (f"inproc://palm-test-forward-{uuid.uuid4().hex}" for _ in range(2))
    try:
        socks[0].bind(first)
        socks[1].connect(first)
        socks[2].bind(second)
        socks[3].connect(second)
        yield socks[0], socks[1], socks[2], socks[3]
    finally:
        for sock in socks:
            sock.close(linger=0)


def test_a_large_received_frame_is_sent_on_whole_without_the_garbage_thread(
    pipes: tuple[zmq.Socket[bytes], ...],
) -> None:
    a, b_in, b_out, c = pipes
    send_frames(a, [b"header", BIG, b"small"])
    frames = recv_forwarded(b_in)
    assert type(frames[1]) is memoryview
    lent = len(gc.refs)
    send_frames(b_out, frames)
    # not yet received by c, so ZeroMQ still holds the message: a buffer lent
    # to it (rather than the frame shared by reference) would be in gc.refs
    assert len(gc.refs) == lent
    assert c.recv_multipart() == [b"header", BIG, b"small"]


def test_part_of_a_received_frame_goes_as_that_part(pipes: tuple[zmq.Socket[bytes], ...]) -> None:
    a, b_in, b_out, c = pipes
    send_frames(a, [b"header", BIG])
    view = recv_forwarded(b_in)[1]
    assert isinstance(view, memoryview)
    send_frames(b_out, [b"header", view[1 : 1 + 70_000], view[: len(BIG) - 5]])
    assert c.recv_multipart() == [b"header", BIG[1 : 1 + 70_000], BIG[:-5]]


class _Expand(Worker):
    def grow(self, message: bytes) -> bytes:
        return message * 5_000  # a few bytes in, a result 5,000 times larger out


def test_a_worker_sends_large_results_of_packed_jobs_a_frame_each(
    pipes: tuple[zmq.Socket[bytes], ...],
) -> None:
    a, b, _, _ = pipes
    worker = _Expand(
        "expand",
        push_address="tcp://127.0.0.1:1",
        pull_address="tcp://127.0.0.1:2",
        db_address="tcp://127.0.0.1:3",
    )
    jobs = [b"abcd", b"efgh", b"ijkl"]  # 20,000-byte results: over PACK_BELOW_BYTES
    small = job_message(b"client", 7, "grow", [b"x", b"y"])
    large = job_message(b"client", 9, "grow", jobs)
    for message in (small, large):
        header, payloads = decode(message)
        assert header.packed  # small jobs travel packed
        reply, out = worker.run_job(header, jobs_in(header, payloads))
        assert len(out) == header.packed
        worker._send_result(a, reply, out)
    small_reply, small_results = decode(b.recv_multipart())
    assert small_reply.packed == 2 and len(small_results) == 1  # small results stay packed
    assert jobs_in(small_reply, small_results) == [b"x" * 5_000, b"y" * 5_000]
    large_reply, large_results = decode(b.recv_multipart())
    assert large_reply.packed == 0 and large_reply.id == 9
    assert large_results == [job * 5_000 for job in jobs]  # a frame each, as the worker made them
