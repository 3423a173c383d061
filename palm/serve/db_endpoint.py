"""The ``db_address`` endpoint of masters and stages: ping, info and the shared cache.

Requests come on a ROUTER socket; each is answered on it, by identity.
PING and INFO are answered at once, on the serving loop. Cache calls never
run there: the cache may be Redis, and a Redis that hangs (stopped, cut off,
on a slow disk) must not slow the jobs the loop routes nor its heartbeats.

How a cache call goes::

    loop: on_message ---(bounded queue)---> cache threads: cache.get/set/delete
      |         \\                                   |
      |          `--(deadline)--> courier thread <--'  (first answer wins)
      |                              |
      `-- on_answer <--inproc PUSH--'   --> the ROUTER, by identity

* A full queue is answered at once with ``StateError`` ("cache busy").
* A call not answered within ``timeout_s`` of its arrival is answered with
  ``StateError`` by the courier; its late result is dropped, and a call
  whose deadline passed while it waited in the queue is never run.
* A cache backend that fails is reported to the caller as an error; the
  endpoint keeps serving.

The cache threads start with the first cache call; :meth:`DbEndpoint.close`
stops and joins them (the serving loop calls it as it closes).
"""

from __future__ import annotations

import itertools
import logging
import queue
import threading
import time
import uuid
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

import zmq

from palm.errors import PayloadTooLarge, ProtocolError
from palm.state.cache import Cache
from palm.wire.messages import routed
from palm.wire.protocol import ErrorInfo, Header, Kind, MalformedCounter, check_size
from palm.wire.sockets import make_socket

__all__ = ["DEFAULT_CACHE_QUEUE", "DEFAULT_CACHE_TIMEOUT_S", "DbEndpoint"]

log = logging.getLogger(__name__)

#: How long a cache call may take before its caller gets ``StateError``.
DEFAULT_CACHE_TIMEOUT_S = 1.0
#: Cache calls waiting for a cache thread before new ones are refused as busy.
DEFAULT_CACHE_QUEUE = 64

_CACHE_KINDS = frozenset({Kind.CACHE_SET, Kind.CACHE_GET, Kind.CACHE_DELETE})
#: How often idle threads look at the stop flag.
_IDLE_S = 0.2


@dataclass(slots=True)
class _Call:
    """One cache call handed to the cache threads."""

    seq: int
    kind: int
    key: str | None
    payload: bytes
    reply: Header
    deadline: float


@dataclass(slots=True)
class _Due:
    """A call the courier answers as timed out unless its result comes first."""

    deadline: float
    identity: bytes
    reply: Header


@dataclass(slots=True)
class _Done:
    """A call's result, from a cache thread."""

    header: Header
    payloads: list[bytes]


class DbEndpoint:
    """A stage's ``db_address``: ping, info and the shared cache.

    ``sock`` is the ROUTER at ``db_address``; ``inbox`` a PULL the serving
    loop reads into :meth:`on_answer`, connected to ``inbox_address`` (where
    the courier thread binds its PUSH). Both belong to the loop's thread.
    """

    def __init__(
        self,
        sock: zmq.Socket[bytes],
        name: str,
        cache: Cache,
        describe: Callable[[str | None], bytes],
        malformed: MalformedCounter,
        max_message_bytes: int,
        *,
        timeout_s: float = DEFAULT_CACHE_TIMEOUT_S,
        queue_size: int = DEFAULT_CACHE_QUEUE,
        threads: int = 2,
    ) -> None:
        self.sock = sock
        self.name = name
        self.cache = cache
        self.describe = describe
        self.malformed = malformed
        self.max_message_bytes = max_message_bytes
        self.timeout_s = timeout_s
        self.queue_size = max(1, queue_size)
        self.threads = max(1, threads)
        #: Where the courier thread's PUSH binds; the loop's inbox connects to it.
        self.inbox_address = f"inproc://palm-db-{name}-{uuid.uuid4().hex}"
        #: Cache calls answered ``StateError``: refused as busy, or timed out.
        self.busy = 0
        self.timed_out = 0
        self._seq = itertools.count()
        self._calls: queue.Queue[_Call] = queue.Queue()
        self._courier_in: queue.Queue[tuple[int, _Due | _Done]] = queue.Queue()
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        #: the CURVE role of the peer whose message is in hand (see :meth:`receive`)
        self.peer_role: str | None = None

    def receive(self, sock: zmq.Socket[bytes], flags: int) -> list[bytes]:
        """Read one message, noting its sender's role (the ZAP User-Id) in ``peer_role``."""
        parts = sock.recv_multipart(flags, copy=False)
        try:
            role = parts[-1].get("User-Id")
        except zmq.ZMQError:
            role = None
        self.peer_role = role if isinstance(role, str) else None
        return [part.bytes for part in parts]

    # the loop's side -----------------------------------------------------------

    def on_message(self, frames: list[bytes]) -> None:
        """A request on the ROUTER: answered now, or handed to the cache threads."""
        try:
            check_size(frames, self.max_message_bytes)
            identity, header, payloads = routed(frames)
        except PayloadTooLarge as exc:
            identity = frames[0]
            error = ErrorInfo(0, "palm.PayloadTooLarge", str(exc), "", self.name)
            self._reply(identity, Header(Kind.RESULT, errors=[error]), [b""])
            return
        except ProtocolError as exc:
            self.malformed.record(str(exc))
            return
        reply = header.reply()
        if header.kind == Kind.PING:
            self._reply(identity, reply, [b"pong"])
        elif header.kind == Kind.INFO:
            try:
                self._reply(identity, reply, [self.describe(self.peer_role)])
            except Exception as exc:  # a describe hook that fails: tell the caller
                self._reply_error(identity, reply, f"palm.{type(exc).__name__}", str(exc))
        elif header.kind in _CACHE_KINDS:
            self._submit(identity, header, reply, payloads)
        else:
            self.malformed.record(f"unexpected {Kind.NAMES[header.kind]} on the db socket")

    def _submit(
        self, identity: bytes, header: Header, reply: Header, payloads: list[bytes]
    ) -> None:
        # Only this thread puts calls in, so a queue found short of full takes one more.
        waiting = self._calls.qsize()
        if waiting >= self.queue_size:
            self.busy += 1
            self._reply_error(
                identity,
                reply,
                "palm.StateError",
                f"cache busy: {waiting} calls wait for the cache of {self.name}; try again",
            )
            return
        self._start_threads()
        call = _Call(
            next(self._seq),
            header.kind,
            header.key,
            payloads[0] if payloads else b"",
            header.reply(),
            time.monotonic() + self.timeout_s,
        )
        # the courier learns of the call before any answer to it can reach it
        self._courier_in.put((call.seq, _Due(call.deadline, identity, reply)))
        self._calls.put(call)

    def on_answer(self, frames: list[bytes]) -> None:
        """An answer from the courier (``[identity, header, payloads...]``): send it out."""
        try:
            self.sock.send_multipart(frames, zmq.NOBLOCK)
        except zmq.ZMQError:
            pass

    def _reply(self, identity: bytes, header: Header, payloads: list[bytes]) -> None:
        self.on_answer([identity, header.to_wire(), *payloads])

    def _reply_error(self, identity: bytes, header: Header, type_: str, message: str) -> None:
        header.errors = [ErrorInfo(0, type_, message, "", self.name)]
        self._reply(identity, header, [b""])

    # threads -------------------------------------------------------------------

    def _start_threads(self) -> None:
        if self._threads or self._stop.is_set():
            return
        courier = threading.Thread(
            target=self._courier, name=f"palm-db-courier-{self.name}", daemon=True
        )
        self._threads.append(courier)
        for i in range(self.threads):
            self._threads.append(
                threading.Thread(
                    target=self._cache_thread, name=f"palm-db-cache-{self.name}-{i}", daemon=True
                )
            )
        for thread in self._threads:
            thread.start()

    def close(self, wait_s: float | None = None) -> None:
        """Stop the cache threads; wait for them (a thread stuck in the cache is left)."""
        self._stop.set()
        deadline = time.monotonic() + (self.timeout_s + 1.0 if wait_s is None else wait_s)
        for thread in self._threads:
            thread.join(max(0.0, deadline - time.monotonic()))
            if thread.is_alive():
                log.warning("%s is still in a cache call; left to end on its own", thread.name)
        self._threads.clear()

    def _cache_thread(self) -> None:
        """Run queued cache calls; hand each answer to the courier."""
        while not self._stop.is_set():
            try:
                call = self._calls.get(timeout=_IDLE_S)
            except queue.Empty:
                continue
            if time.monotonic() >= call.deadline:
                continue  # answered as timed out already: never run it
            header, payloads = self._run(call)
            self._courier_in.put((call.seq, _Done(header, payloads)))

    def _run(self, call: _Call) -> tuple[Header, list[bytes]]:
        reply = call.reply
        try:
            if call.kind == Kind.CACHE_SET:
                key = self.cache.set(call.payload, call.key)
                reply.key = key
                return reply, [key.encode()]
            if call.kind == Kind.CACHE_GET:
                value = self.cache.get(call.key or "")
                if value is None:
                    reply.errors = [
                        ErrorInfo(0, "KeyError", f"no cache key {call.key!r}", "", self.name)
                    ]
                    value = b""
                return reply, [value]
            deleted = self.cache.delete(call.key or "")
            return reply, [b"1" if deleted else b"0"]
        except Exception as exc:  # the cache backend failed: tell the caller, keep serving
            reply.errors = [ErrorInfo(0, f"palm.{type(exc).__name__}", str(exc), "", self.name)]
            return reply, [b""]

    def _courier(self) -> None:
        """Send each call's first answer to the loop: its result, or a timeout."""
        push = make_socket(zmq.PUSH)
        # pending calls by seq; every call has the same timeout, so deadlines are in order
        pending: OrderedDict[int, _Due] = OrderedDict()
        try:
            push.bind(self.inbox_address)
            while not self._stop.is_set():
                wait = _IDLE_S
                if pending:
                    first = next(iter(pending.values())).deadline
                    wait = min(wait, max(0.0, first - time.monotonic()))
                try:
                    seq, item = self._courier_in.get(timeout=wait)
                except queue.Empty:
                    pass
                else:
                    self._courier_take(push, pending, seq, item)
                self._expire(push, pending, time.monotonic())
        finally:
            push.close(0)

    def _courier_take(
        self,
        push: zmq.Socket[bytes],
        pending: OrderedDict[int, _Due],
        seq: int,
        item: _Due | _Done,
    ) -> None:
        if isinstance(item, _Due):
            pending[seq] = item
            return
        due = pending.pop(seq, None)
        if due is None:
            return  # answered as timed out already: the late result is dropped
        self._push(push, [due.identity, item.header.to_wire(), *item.payloads])

    def _expire(
        self,
        push: zmq.Socket[bytes],
        pending: OrderedDict[int, _Due],
        now: float,
    ) -> None:
        while pending:
            seq, due = next(iter(pending.items()))
            if due.deadline > now:
                return
            del pending[seq]
            self.timed_out += 1
            reply = due.reply
            reply.errors = [
                ErrorInfo(
                    0,
                    "palm.StateError",
                    f"the cache of {self.name} did not answer within {self.timeout_s} s",
                    "",
                    self.name,
                )
            ]
            self._push(push, [due.identity, reply.to_wire(), b""])

    @staticmethod
    def _push(push: zmq.Socket[bytes], frames: list[bytes]) -> None:
        try:
            push.send_multipart(frames, zmq.NOBLOCK)
        except zmq.ZMQError:
            pass
