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
from collections.abc import Callable
from typing import Any

import zmq

from palm.errors import PayloadTooLarge, ProtocolError
from palm.protocol import (
    DEFAULT_MAX_MESSAGE_BYTES,
    ErrorInfo,
    Header,
    Kind,
    MalformedCounter,
    check_size,
    decode,
    decode_header,
)
from palm.service import Service, Stopper
from palm.sockets import bound_endpoint, check_endpoint, make_socket

__all__ = ["Server"]

#: Messages handled per wake-up before the poller is asked again.
DRAIN = 256


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
    ) -> None:
        super().__init__(name)
        self.address = check_endpoint(address, "address")
        self.db_address = db_address
        self.max_message_bytes = max_message_bytes
        self.malformed = MalformedCounter(name, self.logger)
        self.handled = 0
        self.failed = 0
        self._stopper = Stopper()
        self._socket: zmq.Socket[bytes] | None = None
        self.bound_address: str | None = None
        #: Called once the socket is bound (``bound_address`` is known).
        self.on_ready: Callable[[Server], None] | None = None

    # lifecycle -----------------------------------------------------------------

    def stop(self) -> None:
        """Ask a running :meth:`start` to return after the message in hand."""
        self._stopper.stop()

    def start(self) -> None:
        """Bind, serve until SIGINT/SIGTERM or :meth:`stop`, close sockets, return."""
        sock = make_socket(zmq.ROUTER, max_message_bytes=self.max_message_bytes)
        sock.setsockopt(zmq.ROUTER_MANDATORY, 1)
        try:
            sock.bind(self.address)
        except zmq.ZMQError as exc:
            sock.close(0)
            raise OSError(f"{self.name} cannot bind {self.address}: {exc}") from exc
        self._socket = sock
        self.bound_address = bound_endpoint(sock)
        self.logger.info("%s serving %s on %s", self.name, self.functions, self.bound_address)
        if self.on_ready is not None:
            self.on_ready(self)
        poller = zmq.Poller()
        poller.register(sock, zmq.POLLIN)
        poller.register(self._stopper.fd, zmq.POLLIN)
        try:
            with self._stopper.on_signals():
                self._serve(sock, poller)
        finally:
            sock.close(0)
            self._socket = None
            self._stopper.close()
            self._stopper = Stopper()
            self.logger.info("%s stopped", self.name)

    def _serve(self, sock: zmq.Socket[bytes], poller: zmq.Poller) -> None:
        stopper = self._stopper
        while not stopper.stopping:
            poller.poll()
            for _ in range(DRAIN):
                if stopper.stopping:
                    return
                try:
                    frames = sock.recv_multipart(zmq.NOBLOCK)
                except zmq.Again:
                    break
                reply = self._handle(frames)
                if reply is not None:
                    try:
                        sock.send_multipart(reply)
                    except zmq.ZMQError as exc:  # peer gone (ROUTER_MANDATORY)
                        self.logger.info("%s could not answer a client: %s", self.name, exc)

    # messages ------------------------------------------------------------------

    def _handle(self, frames: list[bytes]) -> list[bytes] | None:
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
            reply_header, results = self.handle_job(header, payloads)
            return [identity, reply_header.to_wire(), *results]
        if header.kind == Kind.PING:
            return [identity, header.reply().to_wire(), b"pong"]
        if header.kind == Kind.INFO:
            return [identity, header.reply().to_wire(), self.describe()]
        self.malformed.record(f"unexpected {Kind.NAMES[header.kind]} message")
        return None

    def handle_job(self, header: Header, payloads: list[bytes]) -> tuple[Header, list[bytes]]:
        """Run ``header.function`` on each payload: the reply header and results."""
        reply = header.reply()
        func = self.resolve(header.function)
        if func is None:
            reply.errors = [
                self.unknown(header.function, i, header.stage) for i in range(len(payloads))
            ]
            self.failed += len(payloads)
            return reply, [b""] * len(payloads)
        results: list[bytes] = []
        errors: list[ErrorInfo] = []
        for offset, payload in enumerate(payloads):
            result, error = self.call(func, header.function, payload, offset, header.stage)
            results.append(result)
            if error is not None:
                errors.append(error)
        self.handled += len(payloads)
        self.failed += len(errors)
        if errors:
            reply.errors = errors
        return reply, results

    def _too_large(self, frames: list[bytes], exc: PayloadTooLarge) -> list[bytes]:
        count = max(1, len(frames) - 2)
        try:
            reply = decode_header(frames[1]).reply()
        except ProtocolError:
            self.malformed.record("oversized message without a valid header")
            reply = Header(Kind.RESULT)
        self.logger.warning("%s refused a message: %s", self.name, exc)
        reply.kind = Kind.RESULT
        reply.errors = [
            ErrorInfo(i, "palm.PayloadTooLarge", str(exc), "", self.name, reply.stage)
            for i in range(count)
        ]
        return [reply.to_wire(), *([b""] * count)]

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
