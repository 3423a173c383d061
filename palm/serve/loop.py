"""The serve side's socket plumbing: binding, connecting, polling and draining.

Servers, masters and the upstream feeder of a hub all own a set of sockets
(:class:`Sockets`: bound endpoints recorded, every socket closed at the end)
and wait on them with a :class:`Poller` that hands each message of a ready
socket to its handler, at most :data:`DRAIN` per socket per wake-up
(:func:`drain`), so no socket starves the others.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from typing import Any, Final, cast

import zmq

from palm.errors import ProtocolError
from palm.serve.auth import Door, Refusals, open_door
from palm.serve.stopper import Stopper
from palm.wire.messages import control, routed
from palm.wire.protocol import Header, Kind, MalformedCounter, decode_header
from palm.wire.security import Security, is_wildcard
from palm.wire.sockets import bound_endpoint, make_socket, more_waiting, recv_frames

__all__ = [
    "DRAIN",
    "Feeder",
    "HandlerGuard",
    "Poller",
    "Sockets",
    "drain",
    "header_from",
    "routed_from",
    "subscribe",
]

#: Messages taken from one socket per wake-up before looking at the others.
DRAIN: Final = 512

#: How long a blocking receive waits before looking at the stop flag (one socket only).
STOP_CHECK_MS: Final = 100

Handler = Callable[[list[bytes]], object]
Receiver = Callable[[zmq.Socket[bytes], int], list[bytes]]

log = logging.getLogger(__name__)

_POLLIN = int(zmq.POLLIN)
_NOBLOCK = int(zmq.NOBLOCK)


class HandlerGuard:
    """The last resort of a server loop: an exception a handler raised for one
    message is counted and logged (with its traceback, once per burst), and
    the loop goes on serving.

    A handler drops what it knows to be malformed itself; this catches what
    nobody foresaw, so that no message kills a server.
    """

    def __init__(
        self, owner: str, logger: logging.Logger | None = None, burst_s: float = 5.0
    ) -> None:
        self.owner = owner
        self.total = 0
        self._logger = logger or logging.getLogger("palm.loop")
        self._burst_s = burst_s
        self._last_log = float("-inf")
        self._since_log = 0

    def record(self, exc: BaseException) -> None:
        """Count ``exc``; log it when no other was logged within ``burst_s``."""
        self.total += 1
        self._since_log += 1
        now = time.monotonic()
        if now - self._last_log >= self._burst_s:
            self._logger.error(
                "%s: handling a message failed (%d such failure(s) since the last report, "
                "%d in all); the message is dropped and serving goes on",
                self.owner,
                self._since_log,
                self.total,
                exc_info=exc,
            )
            self._last_log = now
            self._since_log = 0


def drain(
    sock: zmq.Socket[bytes],
    handler: Handler,
    limit: int = DRAIN,
    guard: HandlerGuard | None = None,
    receive: Receiver | None = None,
) -> int:
    """Hand up to ``limit`` waiting messages of ``sock`` to ``handler``; how many there were.

    With a ``guard``, an exception from the handler is recorded there and the
    next message is handled; without one it propagates.
    """
    read = recv_frames if receive is None else receive
    for count in range(limit):
        # after the first message, ask once whether more wait; then read until a
        # receive finds nothing (see palm.wire.sockets.more_waiting)
        if count == 1 and not more_waiting(sock):
            return 1
        try:
            frames = read(sock, _NOBLOCK)
        except zmq.Again:
            return count
        if guard is None:
            handler(frames)
            continue
        try:
            handler(frames)
        except Exception as exc:  # the last resort: one message must not end the loop
            guard.record(exc)
    return limit


class Sockets:
    """The sockets one server owns: bound ones recorded in ``bound`` by label.

    With ``security`` every socket speaks CURVE: bound ones accept the roles
    :func:`palm.serve.auth.accepts_for` their label names (peers refused are
    counted in ``refusals``), connected ones use ``security``'s role pair.
    Binding a wildcard host without it logs a warning.
    """

    def __init__(
        self,
        owner: str,
        bound: dict[str, str],
        max_message_bytes: int | None,
        *,
        security: Security | None = None,
        refusals: Refusals | None = None,
    ) -> None:
        self.owner = owner
        self.bound = bound
        self.max_message_bytes = max_message_bytes
        self.security = security
        self.refusals = refusals if refusals is not None else Refusals(owner)
        self._socks: list[zmq.Socket[bytes]] = []
        self._doors: list[Door] = []

    def bind(self, kind: int, address: str, label: str, **options: Any) -> zmq.Socket[bytes]:
        """A socket of ``kind`` bound at ``address``; OSError when it cannot bind."""
        options.setdefault("max_message_bytes", self.max_message_bytes)
        sock = make_socket(kind, **options)
        self._socks.append(sock)
        if self.security is not None:
            door = open_door(self.security, label, self.refusals)
            self._doors.append(door)
            self.security.bind(sock, door.domain)
        elif is_wildcard(address):
            log.warning(
                "%s binds %s %s on every interface without CURVE keys: anyone who can reach it "
                "can submit jobs, register as a worker and read the traffic (see --keys)",
                self.owner,
                label,
                address,
            )
        try:
            sock.bind(address)
        except zmq.ZMQError as exc:
            raise OSError(f"{self.owner} cannot bind {label} {address}: {exc}") from exc
        self.bound[label] = bound_endpoint(sock)
        return sock

    def connect(self, kind: int, address: str, **options: Any) -> zmq.Socket[bytes]:
        """A socket of ``kind`` connected to ``address``."""
        options.setdefault("curve", self.security)
        sock = make_socket(kind, **options)
        self._socks.append(sock)
        sock.connect(address)
        return sock

    def subscriber(self, address: str) -> zmq.Socket[bytes]:
        """A DEALER taking the stream of the upstream at ``address`` (see :func:`subscribe`)."""
        return self.connect(
            zmq.DEALER,
            address,
            identity=f"palm-sub:{self.owner}:{uuid.uuid4().hex[:8]}".encode(),
            max_message_bytes=self.max_message_bytes,
        )

    def close(self) -> None:
        for sock in self._socks:
            sock.close(0)
        self._socks.clear()
        for door in self._doors:
            door.close()
        self._doors.clear()


class Poller:
    """Waits on sockets and a stop fd; drains each ready socket into its handler.

    With a single socket it receives with a blocking call that gives up every
    :data:`STOP_CHECK_MS` instead: cheaper per message than polling and
    draining (the request/reply server), and a stop waits that long at most.

    Every handler call is guarded (:class:`HandlerGuard`, ``guard``): an
    exception it raises for one message is logged and counted, and serving
    goes on.

    A socket added as ``rare`` (one that seldom has traffic: the db endpoint's)
    is watched through its ZeroMQ file descriptor rather than as a socket.
    Waiting on a ZeroMQ socket costs a look at its state (a system call)
    before and after every wait, whatever woke the loop; a descriptor costs
    nothing until it fires. The descriptor fires when the socket's state
    changed, so a rare socket is read until a receive finds nothing (or
    :func:`~palm.wire.sockets.more_waiting` says no more wait) whenever it
    fires, and so are the other rare sockets, since their handlers may send
    on each other: only a rare socket's handlers may send on a rare socket.
    """

    def __init__(self, stop_fd: int, guard: HandlerGuard | None = None) -> None:
        self.guard = guard if guard is not None else HandlerGuard("palm server")
        self._poller = zmq.Poller()
        self._poller.register(stop_fd, _POLLIN)
        self._handlers: list[tuple[zmq.Socket[bytes], Handler]] = []
        self._receivers: dict[zmq.Socket[bytes], Receiver] = {}
        self._paused = False
        self._timeout_ms = -1
        #: monotonic time the last wait ended (every socket not left in :attr:`unread`
        #: had been read to the end since)
        self.polled_at = time.monotonic()
        #: sockets the last wake-up left holding messages (drained to :data:`DRAIN`)
        self.unread: set[zmq.Socket[bytes]] = set()
        self._held: set[zmq.Socket[bytes]] = set()  # paused: not polled, maybe not empty
        #: rare sockets by their file descriptor, in the order added
        self._rare: dict[int, tuple[zmq.Socket[bytes], Handler]] = {}
        self._rare_due = False  # whether a rare socket may hold messages its fd won't tell

    def add(
        self,
        sock: zmq.Socket[bytes],
        handler: Handler,
        receive: Receiver | None = None,
        *,
        rare: bool = False,
    ) -> None:
        """Read ``sock`` into ``handler`` (sockets are served in the order added);
        ``receive(sock, flags)`` reads a message when given (default: ``recv_multipart``).
        ``rare``: the socket seldom has traffic and only rare sockets' handlers send
        on it; it is watched through its file descriptor (see the class)."""
        if receive is not None:
            self._receivers[sock] = receive
        if rare:
            fd = cast(int, sock.get(zmq.FD))
            self._poller.register(fd, _POLLIN)
            self._rare[fd] = (sock, handler)
            self._rare_due = True  # read once before trusting the descriptor
            self._paused = True  # the single-socket path reads plainly: always poll
            return
        self._poller.register(sock, _POLLIN)
        self._handlers.append((sock, handler))
        if receive is not None:
            self._paused = True  # the single-socket path reads plainly: always poll

    def pause(self, sock: zmq.Socket[bytes], paused: bool) -> None:
        """Stop (or resume) reading ``sock`` (not a rare one), leaving its messages queued."""
        if any(rare is sock for rare, _ in self._rare.values()):
            raise ValueError("a rare socket cannot be paused: it is watched by its descriptor")
        self._poller.modify(sock, 0 if paused else _POLLIN)
        self._paused = True  # from now on, always poll
        if paused:
            self._held.add(sock)
        else:
            self._held.discard(sock)

    def read_to_end(self, *socks: zmq.Socket[bytes]) -> bool:
        """Whether every message ``socks`` held at :attr:`polled_at` has been handed
        to its handler: none was paused, and each was either not ready then or
        drained below :data:`DRAIN` since. Nothing is asked of the sockets (asking
        ZeroMQ for a socket's events costs a system call)."""
        unread, held = self.unread, self._held
        return not any(sock in unread or sock in held for sock in socks)

    def poll(self, timeout_ms: int) -> bool:
        """Wait up to ``timeout_ms`` and serve what is ready; False when nothing was."""
        if len(self._handlers) == 1 and not self._paused:
            sock, handler = self._handlers[0]
            timeout_ms = min(timeout_ms, STOP_CHECK_MS)
            if timeout_ms != self._timeout_ms:
                sock.setsockopt(zmq.RCVTIMEO, timeout_ms)
                self._timeout_ms = timeout_ms
            try:
                frames = recv_frames(sock)
            except zmq.Again:
                self.polled_at = time.monotonic()
                return False
            self.polled_at = time.monotonic()
            try:
                handler(frames)
            except Exception as exc:  # the last resort: one message must not end the loop
                self.guard.record(exc)
            return True
        events = self._poller.poll(0 if self._rare_due else timeout_ms)
        self.polled_at = time.monotonic()
        unread = self.unread
        unread.clear()
        if not events and not self._rare_due:
            return False
        ready = {sock for sock, _ in events}
        guard, receivers = self.guard, self._receivers
        for sock, handler in self._handlers:
            if sock in ready and drain(sock, handler, DRAIN, guard, receivers.get(sock)) >= DRAIN:
                unread.add(sock)
        rare = self._rare
        if rare and (self._rare_due or not ready.isdisjoint(rare)):
            self._serve_rare()
        return True

    def _serve_rare(self) -> None:
        """Read every rare socket until none holds a message, their descriptors so
        armed again (a handler's send on one may take its signal: read them all)."""
        guard, receivers = self.guard, self._receivers
        self._rare_due = False
        for _ in range(4):
            read = 0
            for sock, handler in self._rare.values():
                read += drain(sock, handler, DRAIN, guard, receivers.get(sock))
            if not read:
                return
        self._rare_due = True  # still busy: look again at once on the next poll


def subscribe(dealers: Sequence[zmq.Socket[bytes]], topics: Sequence[str], name: str) -> None:
    """Say HELLO on each upstream DEALER, naming the topic whose stream it takes."""
    for dealer, topic in zip(dealers, topics, strict=True):
        try:
            dealer.send_multipart(control(Kind.HELLO, previous=topic, name=name), _NOBLOCK)
        except zmq.ZMQError:
            pass


def routed_from(
    frames: list[bytes], malformed: MalformedCounter
) -> tuple[bytes, Header, list[bytes]] | None:
    """:func:`~palm.wire.messages.routed`, or None with the message counted as malformed."""
    try:
        return routed(frames)
    except ProtocolError as exc:
        malformed.record(str(exc))
        return None


def header_from(frame: bytes, malformed: MalformedCounter) -> Header | None:
    """The header ``frame`` holds, or None with the message counted as malformed."""
    try:
        return decode_header(frame)
    except ProtocolError as exc:
        malformed.record(str(exc))
        return None


class Feeder(threading.Thread):
    """Takes a master's input from upstream streams (a hub's subscriptions) and
    hands it to the master's own job socket at ``inbox``, until ``stopper`` stops."""

    def __init__(
        self,
        name: str,
        upstreams: Sequence[tuple[str, str]],
        inbox: str,
        stopper: Stopper,
        heartbeat_interval_s: float,
        max_message_bytes: int | None,
        security: Security | None = None,
    ) -> None:
        super().__init__(name=f"palm-feeder-{name}", daemon=True)
        self.security = security
        self.owner = name
        self.upstreams = list(upstreams)
        self.inbox = inbox
        self.stopper = stopper
        self.interval_ms = max(1, int(heartbeat_interval_s * 1000))
        self.max_message_bytes = max_message_bytes

    def run(self) -> None:
        sockets = Sockets(self.owner, {}, self.max_message_bytes, security=self.security)
        try:
            push = sockets.connect(zmq.PUSH, self.inbox)

            def forward(frames: list[bytes]) -> None:
                if len(frames) == 1 and _is_welcome(frames[0]):
                    return  # the upstream acknowledging the subscription
                push.send_multipart(frames)

            poller = Poller(self.stopper.fd, HandlerGuard(f"feeder {self.owner}"))
            dealers = [sockets.subscriber(address) for address, _topic in self.upstreams]
            for dealer in dealers:
                poller.add(dealer, forward)
            topics = [topic for _address, topic in self.upstreams]
            subscribe(dealers, topics, self.owner)
            while not self.stopper.stopping:
                if not poller.poll(self.interval_ms):
                    subscribe(dealers, topics, self.owner)
        finally:
            sockets.close()


def _is_welcome(frame: bytes) -> bool:
    try:
        return decode_header(frame).kind == Kind.WELCOME
    except ProtocolError:
        return False
