"""The standalone server: one process answering many clients.

A :class:`Server` binds a ROUTER socket; each client connects a DEALER, so
replies go back to the client that asked, in whatever order clients send,
and no client can wedge another. Subclass it and define functions::

    class MyServer(Server):
        def foo(self, message):
            return b'you sent me ' + message

    MyServer('my_server', 'tcp://127.0.0.1:5555').start()
"""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Callable
from typing import Any, Literal

import zmq

from palm.errors import PayloadTooLarge, ProtocolError
from palm.serve.service import Service, Stopper, split_function
from palm.state.cache import Cache
from palm.state.deployment import Deployment
from palm.wire.protocol import (
    COMPACT_BELOW_BYTES,
    DEFAULT_MAX_MESSAGE_BYTES,
    ErrorInfo,
    Header,
    Kind,
    MalformedCounter,
    check_size,
    decode,
    decode_header,
    encode_compact,
    frames_for,
    is_compact,
    job_count,
    jobs_in,
    reply_head,
    request_id_of,
)
from palm.wire.sockets import bound_endpoint, check_endpoint, make_socket, send_frames

__all__ = ["Server"]

#: How long a stop request may wait for the receive in hand.
STOP_CHECK_MS = 100


class Server(Service):
    """A standalone server: ``Server(name, address).start()`` serves until stopped."""

    _palm_framework = True

    def __init__(
        self,
        name: str,
        address: str,
        db_address: str | None = None,
        *,
        max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES,
        redis_url: str | Literal[False] | None = None,
        cluster: str | None = None,
    ) -> None:
        super().__init__(name)
        self.deployment = Deployment(name, redis_url=redis_url, cluster=cluster, start_redis=True)
        self.counters = self.deployment.counters
        self.address = check_endpoint(address, "address")
        self.db_address = db_address
        self.max_message_bytes = max_message_bytes
        self.malformed = MalformedCounter(name, self.logger)
        self.handled = 0
        self.failed = 0
        # single compact jobs skip the general path unless a subclass handles jobs itself
        self._fast_jobs = type(self).handle_job is Server.handle_job
        self._stopper = Stopper()
        self._socket: zmq.Socket[bytes] | None = None
        self.bound_address: str | None = None
        #: Called once the socket is bound (``bound_address`` is known).
        self.on_ready: Callable[[Server], None] | None = None

    def shared_cache(self) -> Cache:
        if self.deployment.state is None:
            return super().shared_cache()
        return self.deployment.state

    # lifecycle -----------------------------------------------------------------

    def stop(self) -> None:
        """Ask a running :meth:`start` to return after the message in hand."""
        self._stopper.stop()

    def start(self) -> None:
        """Bind, serve until SIGINT/SIGTERM or :meth:`stop`, close sockets, return."""
        self.deployment.open()
        sock = make_socket(zmq.ROUTER, max_message_bytes=self.max_message_bytes)
        sock.setsockopt(zmq.ROUTER_MANDATORY, 1)
        try:
            sock.bind(self.address)
        except zmq.ZMQError as exc:
            sock.close(0)
            self.deployment.close()
            raise OSError(f"{self.name} cannot bind {self.address}: {exc}") from exc
        self._socket = sock
        self.bound_address = bound_endpoint(sock)
        self.logger.info("%s serving %s on %s", self.name, self.functions, self.bound_address)
        if self.on_ready is not None:
            self.on_ready(self)
        try:
            with self._stopper.on_signals():
                self._serve(sock)
        finally:
            sock.close(0)
            self._socket = None
            self._stopper.close()
            self._stopper = Stopper()
            self.deployment.close()
            self.logger.info("%s stopped", self.name)

    def _serve(self, sock: zmq.Socket[bytes]) -> None:
        # A blocking receive that gives up now and then to look at the stop flag
        # costs less per message than a poller; a stop waits STOP_CHECK_MS at most.
        sock.setsockopt(zmq.RCVTIMEO, STOP_CHECK_MS)
        stopper = self._stopper
        while not stopper.stopping:
            try:
                frames = sock.recv_multipart()
            except zmq.Again:
                continue
            reply = self._handle(frames)
            if reply is not None:
                try:
                    send_frames(sock, reply)
                except zmq.ZMQError as exc:  # peer gone (ROUTER_MANDATORY)
                    self.logger.info("%s could not answer a client: %s", self.name, exc)

    # messages ------------------------------------------------------------------

    def _handle(self, frames: list[bytes]) -> list[bytes] | None:
        if len(frames) == 2 and frames[1][:1] == b"\xc1" and self._fast_jobs:
            reply = self._compact_job(frames[1])
            if reply is not None:
                return [frames[0], *reply]
        if len(frames) < 2:
            self.malformed.record("no header frame")
            return None
        identity = frames[0]
        try:
            check_size(frames, self.max_message_bytes)
            header, payloads = decode(frames[1:])
        except PayloadTooLarge as exc:
            return [identity, *self._too_large(frames, exc)]
        except ProtocolError as exc:
            self.malformed.record(str(exc))
            return None
        if header.kind == Kind.JOB:
            try:
                jobs = jobs_in(header, payloads)
            except ProtocolError as exc:
                self.malformed.record(str(exc))
                return None
            reply_header, results = self.handle_job(header, jobs)
            if (
                len(frames) == 2
                and len(results) == 1
                and len(results[0]) < COMPACT_BELOW_BYTES
                and is_compact(frames[1:])
            ):  # answer in the form asked
                return [identity, *encode_compact(reply_header, results[0])]
            return [identity, reply_header.to_wire(), *frames_for(reply_header, results)]
        if header.kind == Kind.PING:
            return [identity, header.reply().to_wire(), b"pong"]
        if header.kind == Kind.INFO:
            return [identity, header.reply().to_wire(), self.describe()]
        self.malformed.record(f"unexpected {Kind.NAMES[header.kind]} message")
        return None

    def _compact_job(self, frame: bytes) -> list[bytes] | None:
        """The reply to a single job in a compact frame, the common request.

        The same work and answer as :meth:`handle_job`, with the reply's header
        made from the request's bytes. None, before running anything, for a
        message this path does not take: the general path handles it.
        """
        if len(frame) > self.max_message_bytes:
            return None
        end = 3 + int.from_bytes(frame[1:3], "big")
        if end > len(frame):
            return None
        head = frame[3:end]
        answer = reply_head(head)
        if answer is None:
            return None
        try:
            header = decode_header(head)
        except ProtocolError:
            return None
        func = self.resolve(header.function)
        if func is None or header.packed or header.kind != Kind.JOB:
            return None
        started = time.monotonic()
        result, error = self.call(
            func, header.function, frame[end:], 0, header.stage, request_id_of(header.extra, 0)
        )
        function = split_function(header.function)[1]
        self.handled += 1
        if error is not None:
            self.failed += 1
            self.counters.record_batch(function, time.monotonic() - started, 1, 1)
            reply = header.reply()
            reply.errors = [error]
            return encode_compact(reply, b"")
        self.counters.record_batch(function, time.monotonic() - started, 1, 0)
        if len(result) >= COMPACT_BELOW_BYTES:
            return [answer, result]
        return [b"\xc1" + len(answer).to_bytes(2, "big") + answer + result]

    def handle_job(self, header: Header, payloads: list[bytes]) -> tuple[Header, list[bytes]]:
        """Run ``header.function`` on each payload: the reply header and results."""
        reply = header.reply()
        started = time.monotonic()
        function = split_function(header.function)[1]
        func = self.resolve(header.function)
        if func is None:
            reply.errors = self.unknown_all(header, len(payloads))
            self.failed += len(payloads)
            self.counters.record_batch(function, 0.0, len(payloads), len(payloads))
            return reply, [b""] * len(payloads)
        results, errors = self.call_all(func, header, payloads)
        self.handled += len(payloads)
        self.failed += len(errors)
        self.counters.record_batch(function, time.monotonic() - started, len(payloads), len(errors))
        if errors:
            reply.errors = errors
        return reply, results

    def _too_large(self, frames: list[bytes], exc: PayloadTooLarge) -> list[bytes]:
        compact = is_compact(frames[1:])
        try:
            if compact:
                frame = frames[1]
                reply = decode_header(frame[3 : 3 + int.from_bytes(frame[1:3], "big")]).reply()
            else:
                reply = decode_header(frames[1]).reply()
        except ProtocolError:
            self.malformed.record("oversized message without a valid header")
            reply = Header(Kind.RESULT)
        count = 1 if compact else job_count(reply, max(1, len(frames) - 2))
        self.logger.warning("%s refused a message: %s", self.name, exc)
        reply.kind = Kind.RESULT
        reply.errors = [
            ErrorInfo(i, "palm.PayloadTooLarge", str(exc), "", self.name, reply.stage)
            for i in range(count)
        ]
        return [reply.to_wire(), *frames_for(reply, [b""] * count)]

    def describe(self) -> bytes:
        """msgpack description of this server for INFO requests."""
        import msgpack

        info: dict[str, Any] = {
            "name": self.name,
            "functions": self.functions,
            "address": self.bound_address,
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "handled": self.handled,
            "failed": self.failed,
            "malformed": self.malformed.total,
        }
        packed = msgpack.packb(info, use_bin_type=True)
        assert isinstance(packed, bytes)
        return packed
