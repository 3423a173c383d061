"""An outlet keeps bounded state whatever its peers send: absent clients, topics, subscribers."""

from __future__ import annotations

import logging
import uuid
from collections.abc import Iterator

import pytest
import zmq

from palm.serve.outlets import Outlet
from palm.wire.messages import control
from palm.wire.protocol import Kind, MalformedCounter
from palm.wire.sockets import make_socket


@pytest.fixture
def outlet() -> Iterator[Outlet]:
    sock = make_socket(zmq.ROUTER)
    sock.bind(f"inproc://outlet-{uuid.uuid4().hex}")
    log = logging.getLogger("test.outlet")
    try:
        yield Outlet(sock, "srv", "session", log, MalformedCounter("srv", log), max_peers=3)
    finally:
        sock.close(0)


def test_results_for_absent_clients_are_kept_for_a_bounded_number_of_them(outlet: Outlet) -> None:
    for i in range(5):
        outlet.to_client(f"client-{i}".encode(), [b"header", b"result"])
    assert list(outlet.parked) == [b"client-2", b"client-3", b"client-4"]
    assert outlet.dropped == 2
    assert set(outlet.parked_since) == set(outlet.parked)


def test_forged_subscriptions_cannot_grow_the_outlet_without_bound(outlet: Outlet) -> None:
    for i in range(10):  # new topics
        outlet.on_message([f"peer-{i}".encode(), *control(Kind.HELLO, previous=f"topic-{i}")])
    for i in range(10):  # many subscribers of one topic
        outlet.on_message([f"sub-{i}".encode(), *control(Kind.HELLO, previous="topic-0")])
    assert len(outlet.subscribers) == 3
    assert all(len(peers) <= 3 for peers in outlet.subscribers.values())
    assert outlet.malformed.total >= 7 + 8
