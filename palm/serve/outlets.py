"""Where a server's messages leave it: sockets that may not take them right now.

* :class:`Outbox`: a PUSH to the next stage of a chain, holding messages in
  order while the next stage is away or behind;
* :class:`Outlet`: the ROUTER clients and downstream stages connect to;
  results go to a client by id, stream messages to every subscriber of a
  topic, and what cannot go now waits, within bounds, for its peer;
* :class:`Reporter`: probe reports sent to the endpoints clients named.
"""

from __future__ import annotations

import logging
import time
from collections import OrderedDict, deque
from collections.abc import Callable
from typing import Any

import zmq

from palm.errors import ProtocolError
from palm.serve.loop import routed_from
from palm.wire.control import Hello
from palm.wire.messages import control
from palm.wire.protocol import Kind, MalformedCounter
from palm.wire.security import Security
from palm.wire.sockets import check_endpoint, make_socket, send_frames

_NOBLOCK = int(zmq.NOBLOCK)

__all__ = ["Outbox", "Outlet", "Reporter"]


class Outbox:
    """Messages for a PUSH socket that may not take them right now.

    A message goes out at once when the socket takes it; otherwise it waits,
    in order, until :meth:`flush` finds room (the next stage came back or
    caught up). Nothing is dropped: the caller stops reading new work while
    the outbox is over ``limit``.
    """

    def __init__(self, sock: zmq.Socket[bytes], limit: int = 10_000) -> None:
        self.sock = sock
        self.limit = limit
        self.waiting: deque[list[bytes]] = deque()

    def send(self, frames: list[bytes]) -> None:
        if self.waiting:
            self.waiting.append(frames)
            self.flush()
            return
        try:
            self.sock.send_multipart(frames, zmq.NOBLOCK)
        except zmq.Again:
            self.waiting.append(frames)

    def flush(self) -> None:
        waiting = self.waiting
        while waiting:
            try:
                self.sock.send_multipart(waiting[0], zmq.NOBLOCK)
            except zmq.Again:
                return
            waiting.popleft()

    @property
    def full(self) -> bool:
        return len(self.waiting) >= self.limit

    def __len__(self) -> int:
        return len(self.waiting)


class Reporter:
    """Sends probe reports to the receiving endpoints clients named (as a stage
    with ``security``, when the cluster has keys)."""

    def __init__(self, limit: int = 16, security: Security | None = None) -> None:
        self.limit = limit
        self.security = security
        self._socks: OrderedDict[str, zmq.Socket[bytes]] = OrderedDict()

    def send(self, address: object, frames: list[bytes]) -> None:
        if not isinstance(address, str):
            return
        sock = self._socks.get(address)
        if sock is None:
            try:
                check_endpoint(address)
            except ValueError:
                return
            sock = make_socket(zmq.DEALER, hwm=100, curve=self.security)
            sock.connect(address)
            self._socks[address] = sock
            while len(self._socks) > self.limit:
                _, old = self._socks.popitem(last=False)
                old.close(0)
        try:
            sock.send_multipart(frames, zmq.NOBLOCK)
        except zmq.ZMQError:
            pass

    def close(self) -> None:
        for sock in self._socks.values():
            sock.close(0)
        self._socks.clear()


class Outlet:
    """A ROUTER socket a stage sends results out of.

    Clients connect a DEALER (identity: their client id) and say HELLO;
    downstream stages connect a DEALER and say HELLO with
    ``extra['previous']``, the topic whose stream they take. Results go to a
    client by id; stream messages go to every subscriber of a topic. What
    cannot be sent now (the peer is gone, or there is no subscriber yet)
    waits, within ``park_limit`` messages per peer, until the peer says
    HELLO again; a topic's stream waits until ``subscribers`` servers took
    it, so none of them misses the start; what waits for a client that stays
    away ``park_ttl_s`` is dropped (:meth:`expire`). Probe reports from earlier
    stages are relayed to their client. ``welcome(identity)`` adds fields to the
    WELCOME a peer gets for its HELLO.
    """

    def __init__(
        self,
        sock: zmq.Socket[bytes],
        name: str,
        session: str,
        logger: logging.Logger,
        malformed: MalformedCounter,
        park_limit: int = 100_000,
        subscribers: int = 1,
        park_ttl_s: float = 300.0,
        welcome: Callable[[bytes], dict[str, Any]] | None = None,
        max_peers: int = 10_000,
    ) -> None:
        sock.setsockopt(zmq.ROUTER_MANDATORY, 1)
        sock.setsockopt(zmq.ROUTER_HANDOVER, 1)
        self.sock = sock
        self.name = name
        self.session = session
        self.logger = logger
        self.malformed = malformed
        self.park_limit = park_limit
        self.min_subscribers = subscribers
        self.park_ttl_s = park_ttl_s
        self.welcome = welcome
        #: peers with messages waiting, topics, and subscribers of a topic: each at most this many
        self.max_peers = max_peers
        self.subscribers: dict[str, list[bytes]] = {}
        self.parked: dict[bytes, deque[list[bytes]]] = {}
        self.parked_since: dict[bytes, float] = {}
        self.topic_parked: dict[str, deque[list[bytes]]] = {}
        self.dropped = 0

    def to_client(self, client: bytes, frames: list[bytes]) -> None:
        try:
            send_frames(self.sock, [client, *frames], _NOBLOCK)
        except zmq.ZMQError:
            box = self.parked.get(client)
            if box is None:
                if len(self.parked) >= self.max_peers:  # the longest-parked peer gives way
                    oldest = next(iter(self.parked))
                    self.dropped += len(self.parked.pop(oldest))
                    self.parked_since.pop(oldest, None)
                    self.malformed.record("too many absent peers; dropped the oldest one's results")
                box = self.parked[client] = deque()
                self.parked_since[client] = time.monotonic()
            self._park(box, frames)

    def to_topic(self, topic: str, frames: list[bytes]) -> None:
        peers = self.subscribers.get(topic)
        if not peers or len(peers) < self.min_subscribers:
            self._park(self.topic_parked.setdefault(topic, deque()), frames)
            return
        for peer in peers:
            self.to_client(peer, frames)

    def _park(self, box: deque[list[bytes]], frames: list[bytes]) -> None:
        if len(box) >= self.park_limit:
            box.popleft()
            self.dropped += 1
            self.logger.warning(
                "%s: a peer stayed away too long; dropped its oldest waiting message", self.name
            )
        box.append(frames)

    def on_message(self, frames: list[bytes]) -> None:
        """Handle what a client or a downstream stage sent to the ROUTER."""
        message = routed_from(frames, self.malformed)
        if message is None:
            return
        identity, header, _ = message
        hello: Hello | None = None
        if header.kind in (Kind.HELLO, Kind.HEARTBEAT):
            try:
                hello = Hello.from_header(header)
            except ProtocolError as exc:
                self.malformed.record(f"{Kind.NAMES[header.kind]}: {exc}")
                return
        if hello is not None and header.kind == Kind.HEARTBEAT and hello.probe:
            self.to_client(header.client, frames[1:])
        elif hello is not None:
            topic = hello.previous
            if topic is not None and not self._may_subscribe(topic):
                self.malformed.record(f"subscription to {topic!r} refused: too many")
                topic = None
            if topic is not None:
                peers = self.subscribers.setdefault(topic, [])
                if identity not in peers:
                    peers.append(identity)
                    self.logger.info("%s: %r subscribed to %r", self.name, hello.name, topic)
            more = self.welcome(identity) if self.welcome is not None else {}
            self.to_client(
                identity, control(Kind.WELCOME, identity, header.id, session=self.session, **more)
            )
            self.parked_since.pop(identity, None)
            self._release(self.parked.pop(identity, None), identity)
            if topic is not None and len(self.subscribers[topic]) >= self.min_subscribers:
                box = self.topic_parked.pop(topic, None)
                while box:
                    self.to_topic(topic, box.popleft())
        elif header.kind == Kind.BYE:
            self.parked.pop(identity, None)
            self.parked_since.pop(identity, None)
            for peers in self.subscribers.values():
                if identity in peers:
                    peers.remove(identity)
        else:
            self.malformed.record(f"unexpected {Kind.NAMES[header.kind]} on the push socket")

    def _may_subscribe(self, topic: str) -> bool:
        peers = self.subscribers.get(topic)
        if peers is None:
            return len(self.subscribers) < self.max_peers
        return len(peers) < self.max_peers

    def expire(self, now: float) -> None:
        """Drop what waited longer than ``park_ttl_s`` for a client that never came back."""
        for client, since in list(self.parked_since.items()):
            if now - since > self.park_ttl_s:
                lost = len(self.parked.pop(client, ()))
                del self.parked_since[client]
                self.logger.warning(
                    "%s: dropped %d message(s) for client %s, silent for %.0f s",
                    self.name,
                    lost,
                    client.hex(),
                    self.park_ttl_s,
                )

    def _release(self, box: deque[list[bytes]] | None, identity: bytes) -> None:
        while box:
            self.to_client(identity, box.popleft())

    @property
    def waiting(self) -> int:
        return sum(len(b) for b in self.parked.values()) + sum(
            len(b) for b in self.topic_parked.values()
        )
