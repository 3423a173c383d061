"""The serial stage: one process in a chain or pipeline of servers.

Sockets (every address a full ZeroMQ endpoint)::

    previous stage / client --PUSH--> pull_address (PULL)   messages in
    upstream's push_address (ROUTER) <-DEALER-               messages in, by subscription
    next_address (PULL of the next stage) <-PUSH-            messages on (chained)
    clients and subscribers <-DEALER- push_address (ROUTER)  results out / stream out
    anyone <-DEALER- db_address (ROUTER)                     ping, info, cache

A stage runs the function a message names on each payload; a payload that
failed at an earlier stage keeps its error and passes through untouched.
Where the results go is :meth:`SerialStage.handle_stream`'s choice: the next stage
(``next_address``, calling ``next_call``), the subscribers of this stage's
stream (``pipelined``), or the client. See :mod:`palm.serve.stream` for probes and
end markers.
"""

from __future__ import annotations

import os
import socket
import uuid
from collections.abc import Callable, Sequence
from typing import Any

import msgpack
import zmq

from palm.errors import ConfigError, PayloadTooLarge, ProtocolError
from palm.serve.db_endpoint import DbEndpoint
from palm.serve.service import Service, Stopper, split_function
from palm.serve.stream import (
    NEXT,
    EndTracker,
    Outbox,
    Outlet,
    Reporter,
    StreamRouting,
    explode,
    function_for,
    probe_report,
)
from palm.state.cache import Cache, MemoryCache
from palm.wire.protocol import (
    DEFAULT_MAX_MESSAGE_BYTES,
    ErrorInfo,
    Header,
    Kind,
    MalformedCounter,
    check_size,
    decode,
    decode_header,
    jobs_in,
)
from palm.wire.sockets import bound_endpoint, check_endpoint, make_socket

__all__ = ["NEXT", "SerialStage"]

#: Messages handled per socket per wake-up.
DRAIN = 256


class SerialStage(StreamRouting, Service):
    """A single-process stage. Subclass it and define functions, then ``start()``."""

    _palm_framework = True

    def __init__(
        self,
        name: str,
        *,
        pull_address: str | None = None,
        upstreams: Sequence[tuple[str, str]] = (),
        next_address: str | None = None,
        next_call: str | None = None,
        push_address: str | None = None,
        db_address: str | None = None,
        pipelined: bool = False,
        subscribers: int = 1,
        cache: Cache | None = None,
        heartbeat_interval_s: float = 1.0,
        max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES,
    ) -> None:
        super().__init__(name)
        if pull_address is None and not upstreams:
            raise ConfigError(f"stage {name!r} needs a pull_address or upstream streams")
        if next_address is None and push_address is None:
            raise ConfigError(f"stage {name!r} needs a next_address or a push_address")
        if next_address is not None and not next_call:
            raise ConfigError(f"stage {name!r} has a next_address but no next_call")
        self.pull_address = check_endpoint(pull_address, "pull_address") if pull_address else None
        self.upstreams = [(check_endpoint(a, "upstream address"), t) for a, t in upstreams]
        self.next_address = check_endpoint(next_address, "next_address") if next_address else None
        self.next_call = next_call
        self.push_address = check_endpoint(push_address, "push_address") if push_address else None
        self.db_address = check_endpoint(db_address, "db_address") if db_address else None
        self.pipelined = pipelined
        self.subscribers = subscribers
        self.cache: Cache = cache if cache is not None else MemoryCache()
        self.heartbeat_interval_s = heartbeat_interval_s
        self.max_message_bytes = max_message_bytes
        self.session = uuid.uuid4().hex[:12]
        self.malformed = MalformedCounter(name, self.logger)
        self.stats = {"jobs_in": 0, "jobs_out": 0, "failed": 0}
        self.bound: dict[str, str] = {}
        #: Called once every socket is bound (``bound`` holds the endpoints).
        self.on_ready: Callable[[Any], None] | None = None
        self.ends = EndTracker()
        self._routes_by_hook = type(self).handle_stream is not SerialStage.handle_stream
        self._stopper = Stopper()
        self._outbox: Outbox | None = None
        self._outlet: Outlet | None = None
        self._reporter = Reporter()
        self._inputs: list[zmq.Socket[bytes]] = []

    # lifecycle ---------------------------------------------------------------

    def stop(self) -> None:
        """Ask a running :meth:`start` to return."""
        self._stopper.stop()

    def start(self) -> None:
        """Bind and connect, serve until SIGINT/SIGTERM or :meth:`stop`, close, return."""
        sockets: list[zmq.Socket[bytes]] = []
        try:
            self._open(sockets)
            self.logger.info("%s serving %s on %s", self.name, self.functions, self.bound)
            if self.on_ready is not None:
                self.on_ready(self)
            with self._stopper.on_signals():
                self._loop()
        finally:
            for sock in sockets:
                sock.close(0)
            self._reporter.close()
            self._stopper.close()
            self._stopper = Stopper()
            self.logger.info("%s stopped", self.name)

    def _bind(
        self, sockets: list[zmq.Socket[bytes]], kind: int, address: str, label: str
    ) -> zmq.Socket[bytes]:
        sock = make_socket(kind, max_message_bytes=self.max_message_bytes)
        sockets.append(sock)
        try:
            sock.bind(address)
        except zmq.ZMQError as exc:
            raise OSError(f"{self.name} cannot bind {label} {address}: {exc}") from exc
        self.bound[label] = bound_endpoint(sock)
        return sock

    def _open(self, sockets: list[zmq.Socket[bytes]]) -> None:
        if self.pull_address is not None:
            self._inputs.append(self._bind(sockets, zmq.PULL, self.pull_address, "pull"))
        for address, _topic in self.upstreams:
            dealer = make_socket(
                zmq.DEALER,
                identity=f"palm-sub:{self.name}:{uuid.uuid4().hex[:8]}".encode(),
                max_message_bytes=self.max_message_bytes,
            )
            sockets.append(dealer)
            dealer.connect(address)
            self._inputs.append(dealer)
        if self.push_address is not None:
            out = self._bind(sockets, zmq.ROUTER, self.push_address, "push")
            self._outlet = Outlet(
                out,
                self.name,
                self.session,
                self.logger,
                self.malformed,
                subscribers=self.subscribers,
            )
        if self.next_address is not None:
            push = make_socket(zmq.PUSH)
            sockets.append(push)
            push.connect(self.next_address)
            self._outbox = Outbox(push)
            self.bound["next"] = self.next_address
        self._db: DbEndpoint | None = None
        if self.db_address is not None:
            db = self._bind(sockets, zmq.ROUTER, self.db_address, "db")
            self._db = DbEndpoint(
                db, self.name, self.cache, self.describe, self.malformed, self.max_message_bytes
            )

    def _subscribe(self) -> None:
        for (_address, topic), dealer in zip(
            self.upstreams, self._inputs[-len(self.upstreams) :], strict=True
        ):
            hello = Header(Kind.HELLO, 0, extra={"previous": topic, "name": self.name})
            try:
                dealer.send_multipart([hello.to_wire()], zmq.NOBLOCK)
            except zmq.ZMQError:
                pass

    def _loop(self) -> None:
        poller = zmq.Poller()
        for sock in self._inputs:
            poller.register(sock, zmq.POLLIN)
        if self._outlet is not None:
            poller.register(self._outlet.sock, zmq.POLLIN)
        if self._db is not None:
            poller.register(self._db.sock, zmq.POLLIN)
        poller.register(self._stopper.fd, zmq.POLLIN)
        interval_ms = max(1, int(self.heartbeat_interval_s * 1000))
        stopper = self._stopper
        outbox = self._outbox
        reading = True
        if self.upstreams:
            self._subscribe()
        while not stopper.stopping:
            events = dict(poller.poll(interval_ms if not (outbox and outbox.waiting) else 50))
            if not events and self.upstreams:
                self._subscribe()
            for index, sock in enumerate(self._inputs):
                if sock in events:
                    self._drain(sock, index)
            if self._outlet is not None and self._outlet.sock in events:
                self._drain_with(self._outlet.sock, self._outlet.on_message)
            if self._db is not None and self._db.sock in events:
                self._drain_with(self._db.sock, self._db.on_message)
            if outbox is not None:
                outbox.flush()
                if outbox.full == reading:
                    reading = not reading
                    for sock in self._inputs:
                        poller.modify(sock, zmq.POLLIN if reading else 0)

    def _drain_with(self, sock: zmq.Socket[bytes], handler: Callable[[list[bytes]], None]) -> None:
        for _ in range(DRAIN):
            try:
                frames = sock.recv_multipart(zmq.NOBLOCK)
            except zmq.Again:
                return
            handler(frames)

    def _drain(self, sock: zmq.Socket[bytes], source: int) -> None:
        for _ in range(DRAIN):
            try:
                frames = sock.recv_multipart(zmq.NOBLOCK)
            except zmq.Again:
                return
            self._on_input(frames, source)

    # messages ----------------------------------------------------------------

    def _on_input(self, frames: list[bytes], source: int) -> None:
        try:
            check_size(frames, self.max_message_bytes)
            header, payloads = decode(frames)
            if header.packed:  # stages pass jobs on one frame each
                payloads = jobs_in(header, payloads)
                header.packed = 0
        except PayloadTooLarge as exc:
            self._refuse(frames, exc)
            return
        except ProtocolError as exc:
            self.malformed.record(str(exc))
            return
        header.stage += 1
        if header.kind == Kind.JOB:
            self.stats["jobs_in"] += len(payloads)
            results, errors = self._run_payloads(header, payloads)
            header.errors = errors or None
            self._forward(header, results)
        elif header.kind == Kind.PING:
            self._on_probe(header)
        elif header.kind == Kind.BYE and header.pipeline is not None:
            self._on_end(header, source)
        elif header.kind == Kind.WELCOME:
            pass  # an upstream acknowledging our subscription
        else:
            self.malformed.record(f"unexpected {Kind.NAMES[header.kind]} on the stream")

    def _run_payloads(
        self, header: Header, payloads: list[bytes]
    ) -> tuple[list[bytes], list[ErrorInfo]]:
        """Run this stage's function on every payload that has not failed yet."""
        function = function_for(header.function, self.name)
        func = self.resolve(function) if function else None
        name = split_function(function)[1]
        passed = {e.offset: e for e in header.errors} if header.errors else {}
        results: list[bytes] = []
        errors: list[ErrorInfo] = []
        for offset, payload in enumerate(payloads):
            earlier = passed.get(offset)
            if earlier is not None:
                results.append(b"")
                errors.append(earlier)
                continue
            if func is None:
                results.append(b"")
                errors.append(self._unknown(header.function, offset, header.stage))
                continue
            result, error = self.call(func, name, payload, offset, header.stage)
            results.append(result)
            if error is not None:
                errors.append(error)
        self.stats["failed"] += len(errors) - len(passed)
        return results, errors

    def _unknown(self, function: str, offset: int, stage: int) -> ErrorInfo:
        if " " in function and not function_for(function, self.name):
            return ErrorInfo(
                offset,
                "palm.UnknownFunction",
                f"the route {function!r} does not name {self.name!r}",
                "",
                self.name,
                stage,
            )
        return self.unknown(function, offset, stage)

    def _forward(self, header: Header, payloads: list[bytes]) -> None:
        """Send results on, as ``_route`` or :meth:`handle_stream` decides."""
        if not self._routes_by_hook or self.next_address is not None:
            self._emit(self._route(header), header, payloads)
            return
        for message in explode(header, payloads):
            topic = self.handle_stream(message)
            target: str | bytes = message.client if topic is None else topic
            self._emit(target, message.header(Kind.JOB), [message.payload])

    def _emit(self, target: str | bytes, header: Header, payloads: list[bytes]) -> None:
        """Send one message to the next stage, a topic's subscribers or a client."""
        self.ends.count(header.pipeline, len(payloads))
        self.stats["jobs_out"] += len(payloads)
        if target == NEXT:
            assert self._outbox is not None and self.next_call is not None
            header.kind = Kind.JOB
            if " " not in header.function:
                header.function = self.next_call
            self._outbox.send([header.to_wire(), *payloads])
            return
        assert self._outlet is not None, f"{self.name} has no push_address to send to"
        if isinstance(target, bytes):
            header.kind = Kind.RESULT
            self._outlet.to_client(target, [header.to_wire(), *payloads])
        else:
            header.kind = Kind.JOB
            self._outlet.to_topic(target, [header.to_wire(), *payloads])

    def _send_control(self, header: Header) -> None:
        """Pass a probe or an end marker on, the way results go."""
        target = self._route(header)
        if target == NEXT:
            assert self._outbox is not None
            self._outbox.send([header.to_wire()])
        elif self._outlet is not None:
            if isinstance(target, bytes):
                self._outlet.to_client(target, [header.to_wire()])
            else:
                self._outlet.to_topic(target, [header.to_wire()])

    def _on_probe(self, header: Header) -> None:
        """Report to the probing client, then pass the probe on."""
        target = self._route(header)
        details: dict[str, Any] = {"last": isinstance(target, bytes), "next": self._next_desc()}
        if self._outbox is not None:
            details["waiting"] = len(self._outbox)
        report = probe_report(header, self.name, **details)
        if isinstance(target, bytes):
            assert self._outlet is not None
            self._outlet.to_client(header.client, report)
            return
        self._reporter.send((header.extra or {}).get("reply"), report)
        self._send_control(header)

    def _on_end(self, header: Header, source: int) -> None:
        """An end marker: everything of its pipeline that came before it has gone on."""
        extra = dict(header.extra or {})
        extra["end"] = self.ends.pop(header.pipeline)
        header.extra = extra
        self._send_control(header)

    def _refuse(self, frames: list[bytes], exc: PayloadTooLarge) -> None:
        try:
            header = decode_header(frames[0])
        except (ProtocolError, IndexError):
            self.malformed.record("oversized message without a valid header")
            return
        self.logger.warning("%s refused a message: %s", self.name, exc)
        header.stage += 1
        count = max(1, len(frames) - 1)
        header.errors = [
            ErrorInfo(i, "palm.PayloadTooLarge", str(exc), "", self.name, header.stage)
            for i in range(count)
        ]
        self.stats["failed"] += count
        self._forward(header, [b""] * count)

    # info ----------------------------------------------------------------------

    def _info(self) -> dict[str, Any]:
        """What INFO on the db endpoint answers (a hook: subclasses add fields)."""
        return {
            "name": self.name,
            "kind": type(self).__name__,
            "functions": self.functions,
            "addresses": self.bound,
            "next_call": self.next_call,
            "pipelined": self.pipelined,
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "stats": dict(self.stats),
            "waiting": (len(self._outbox) if self._outbox else 0)
            + (self._outlet.waiting if self._outlet else 0),
            "malformed": self.malformed.total,
        }

    def describe(self) -> bytes:
        packed = msgpack.packb(self._info(), use_bin_type=True)
        assert isinstance(packed, bytes)
        return packed
