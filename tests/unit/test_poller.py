"""The serve loop's poller: which sockets a wake-up read to the end, and frames
received whole (real ZeroMQ sockets over inproc)."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest
import zmq

from palm.serve import loop
from palm.serve.loop import Poller
from palm.serve.stopper import Stopper
from palm.wire.sockets import context, recv_forwarded, recv_frames


@pytest.fixture
def pairs() -> Iterator[list[tuple[zmq.Socket[bytes], zmq.Socket[bytes]]]]:
    """Two (sender, receiver) PAIR socket pairs."""
    made = []
    for _ in range(2):
        address = f"inproc://palm-test-poller-{uuid.uuid4().hex}"
        receiver, sender = context().socket(zmq.PAIR), context().socket(zmq.PAIR)
        receiver.bind(address)
        sender.connect(address)
        made.append((sender, receiver))
    yield made
    for sender, receiver in made:
        sender.close(0)
        receiver.close(0)


def test_read_to_end_follows_what_each_wake_up_left(pairs, monkeypatch) -> None:
    monkeypatch.setattr(loop, "DRAIN", 2)
    stopper = Stopper()
    poller = Poller(stopper.fd)
    got: list[list[bytes]] = []
    (a_out, a_in), (b_out, b_in) = pairs
    poller.add(a_in, got.append)
    poller.add(b_in, got.append)
    try:
        for n in range(3):
            a_out.send(b"a%d" % n)
        b_out.send(b"b0")
        assert poller.poll(1000)
        # a held three, two were read: it is not read to the end; b is
        assert not poller.read_to_end(a_in) and poller.read_to_end(b_in)
        assert not poller.read_to_end(a_in, b_in)
        before = poller.polled_at
        assert poller.poll(1000)
        assert poller.read_to_end(a_in, b_in) and poller.polled_at >= before
        assert sorted(frames[0] for frames in got) == [b"a0", b"a1", b"a2", b"b0"]
        assert not poller.poll(10)  # nothing: everything was read
        assert poller.read_to_end(a_in, b_in)
        poller.pause(a_in, True)  # a paused socket may hold anything
        assert not poller.read_to_end(a_in) and poller.read_to_end(b_in)
        poller.pause(a_in, False)
        assert poller.read_to_end(a_in)
    finally:
        stopper.close()


@pytest.mark.parametrize(
    "message",
    [[b"h"], [b"h", b""], [b"id", b"head", b"x" * 100], [b"head", b"y" * (1 << 20)]],
)
def test_frames_arrive_whole_and_in_order(pairs, message) -> None:
    sender, receiver = pairs[0]
    for receive in (recv_frames, recv_forwarded):
        sender.send_multipart(message)
        assert receiver.poll(5000)
        frames = receive(receiver, zmq.NOBLOCK)
        assert [bytes(frame) for frame in frames] == message
        assert type(frames[0]) is bytes
    with pytest.raises(zmq.Again):
        recv_frames(receiver, zmq.NOBLOCK)
