"""Large payloads cross a master without a copy of their own, and hooks still get bytes."""

from __future__ import annotations

from collections.abc import Iterator

import zmq

from palm.serve.master import Master
from palm.serve.stream import Message
from palm.testing import LocalMaster
from palm.wire.sockets import as_bytes, context, recv_forwarded, send_frames
from tests.apps.kit import Echo, ok

BIG = bytes(range(256)) * 4096  # 1 MiB


def test_recv_forwarded_keeps_large_frames_in_place_and_copies_small_ones() -> None:
    a = context().socket(zmq.PAIR)
    b = context().socket(zmq.PAIR)
    try:
        a.bind("inproc://palm-test-large-frames")
        b.connect("inproc://palm-test-large-frames")
        send_frames(a, [b"header", b"small", BIG, b"tail"])
        frames = recv_forwarded(b)
        assert [type(f) for f in frames] == [bytes, bytes, memoryview, bytes]
        assert frames[2] == BIG and len(frames[2]) == len(BIG)
        made = as_bytes(frames)
        assert made == [b"header", b"small", BIG, b"tail"]
        assert all(type(f) is bytes for f in made)
        plain = [b"x", b"y"]
        assert as_bytes(plain) is plain  # nothing to convert: no new list
    finally:
        a.close(linger=0)
        b.close(linger=0)


def test_large_payloads_go_through_a_master_and_come_back_whole() -> None:
    with LocalMaster() as cluster:
        cluster.add_worker(Echo)
        client = cluster.client()
        payloads = [BIG[i:] + BIG[:i] for i in range(0, 40, 4)]
        results = ok(client.job("echo", payloads, ordered=True))
        assert results == payloads
        assert all(type(r) is bytes for r in results)


class Seen(Master):
    """A master whose gather hook records the types of the payloads it gets."""

    kinds: list[type] = []

    def gather(self, message: Message) -> Iterator[Message]:
        Seen.kinds.append(type(message.payload))
        yield message


def test_a_hook_gets_large_payloads_as_bytes() -> None:
    Seen.kinds = []
    with LocalMaster(master_class=Seen) as cluster:
        cluster.add_worker(Echo)
        client = cluster.client()
        assert ok(client.job("echo", [BIG, b"small"], ordered=True)) == [BIG, b"small"]
    assert Seen.kinds == [bytes, bytes]
