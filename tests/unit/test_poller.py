"""The serve loop's poller: which sockets a wake-up read to the end, and frames
received whole (real ZeroMQ sockets over inproc)."""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Iterator

import pytest
import zmq

from palm.serve import loop
from palm.serve.loop import Poller
from palm.serve.stopper import Stopper
from palm.wire.sockets import context, more_waiting, recv_forwarded, recv_frames


def _socket_pair(kind_in: int, kind_out: int) -> tuple[zmq.Socket[bytes], zmq.Socket[bytes]]:
    address = f"inproc://palm-test-poller-{uuid.uuid4().hex}"
    inside, outside = context().socket(kind_in), context().socket(kind_out)
    inside.bind(address)
    outside.connect(address)
    return inside, outside


@pytest.fixture
def pairs() -> Iterator[list[tuple[zmq.Socket[bytes], zmq.Socket[bytes]]]]:
    """Two (sender, receiver) PAIR socket pairs."""
    made = []
    for _ in range(2):
        receiver, sender = _socket_pair(zmq.PAIR, zmq.PAIR)
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


def test_a_rare_socket_is_served_by_its_descriptor(pairs) -> None:
    stopper = Stopper()
    poller = Poller(stopper.fd)
    hot: list[list[bytes]] = []
    rare: list[list[bytes]] = []
    (h_out, h_in), (r_out, r_in) = pairs
    poller.add(h_in, hot.append)
    poller.add(r_in, rare.append, rare=True)
    try:
        r_out.send(b"before the first poll")
        assert poller.poll(1000)
        assert rare == [[b"before the first poll"]]
        assert not poller.poll(10)  # all read: the descriptor is armed
        for n in range(3):  # messages that arrive while the loop waits wake it
            r_out.send(b"r%d" % n)
            h_out.send(b"h%d" % n)
            assert poller.poll(1000)
        for _ in range(10):
            if len(rare) == 4 and len(hot) == 3:
                break
            poller.poll(100)
        assert [f[0] for f in rare] == [b"before the first poll", b"r0", b"r1", b"r2"]
        assert [f[0] for f in hot] == [b"h0", b"h1", b"h2"]
        assert not poller.poll(10)
        with pytest.raises(ValueError, match="rare socket cannot be paused"):
            poller.pause(r_in, True)
    finally:
        stopper.close()


def test_rare_sockets_that_send_on_each_other_lose_no_message() -> None:
    """The db endpoint's shape: requests on a ROUTER go to a courier; its answers come
    back on a PULL whose handler sends them out on the ROUTER. A send on the ROUTER
    may take the signal of a request that arrived meanwhile: none may be left."""
    stopper = Stopper()
    poller = Poller(stopper.fd)
    address = f"inproc://palm-test-poller-{uuid.uuid4().hex}"
    router = context().socket(zmq.ROUTER)
    router.bind(address)
    answers, courier = _socket_pair(zmq.PULL, zmq.PUSH)
    poller.add(router, courier.send_multipart, rare=True)  # to the courier, as it came
    poller.add(answers, router.send_multipart, rare=True)  # back out to its sender
    count, got = 2000, []

    def client() -> None:  # requests from another thread, a few out at once
        dealer = context().socket(zmq.DEALER)
        dealer.connect(address)
        sent = 0
        try:
            while len(got) < count:
                while sent < count and sent - len(got) < 1 + sent % 5:
                    dealer.send(b"%d" % sent)
                    sent += 1
                if not dealer.poll(2000):
                    return  # a request left unserved: the loop never saw it
                got.append(dealer.recv())
        finally:
            dealer.close(0)

    thread = threading.Thread(target=client, daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 30
        while thread.is_alive() and time.monotonic() < deadline:
            poller.poll(50)
        thread.join(5)
        assert sorted(got, key=int) == [b"%d" % n for n in range(count)]
    finally:
        for sock in (router, answers, courier):
            sock.close(0)
        stopper.close()


def test_drain_asks_once_then_reads_every_waiting_message(pairs) -> None:
    sender, receiver = pairs[0]
    got: list[list[bytes]] = []
    assert not more_waiting(receiver)
    sender.send(b"one")
    assert receiver.poll(5000)
    assert more_waiting(receiver)
    assert loop.drain(receiver, got.append) == 1  # one, then told nothing more waits
    for n in range(5):
        sender.send(b"%d" % n)
    for _ in range(50):  # inproc delivers at once; the loop only bounds the wait
        if receiver.poll(100) and loop.drain(receiver, got.append) == 5:
            break
    assert [frames[0] for frames in got] == [b"one", b"0", b"1", b"2", b"3", b"4"]
    assert not more_waiting(receiver)
