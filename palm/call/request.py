"""The standalone client: ``Client(address, server_name).job('foo', b'...')``.

Each call sends one message on a DEALER socket and waits for the reply with
the same message id. On a timeout the socket is thrown away and a fresh one
is made for the next call (the Lazy Pirate pattern), so a late reply to an
abandoned call can never be taken for the answer to a new one.
"""

from __future__ import annotations

import itertools
import os
import time
import uuid
from collections.abc import Sequence

import zmq

from palm.errors import ConfigError, PayloadTooLarge, ProtocolError, TimeoutError
from palm.wire.messages import COMPACT_BELOW_BYTES, compact, reply_head
from palm.wire.protocol import (
    DEFAULT_MAX_MESSAGE_BYTES,
    Header,
    Kind,
    decode,
)
from palm.wire.sockets import check_endpoint, make_socket, send_frames

__all__ = ["DEFAULT_TIMEOUT_S", "Client"]

#: How long a call waits for its reply unless told otherwise.
DEFAULT_TIMEOUT_S = 30.0

_UNSET = object()


class Client:
    """A client of one standalone :class:`~palm.serve.server.Server`.

    ``timeout_s`` bounds each call (``None`` waits forever); on a timeout
    :class:`palm.errors.TimeoutError` is raised and the client stays usable.
    A client object is meant for one thread at a time.
    """

    def __init__(
        self,
        server_address: str,
        server_name: str,
        db_address: str | None = None,
        *,
        timeout_s: float | None = DEFAULT_TIMEOUT_S,
        max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES,
    ) -> None:
        self.server_address = check_endpoint(server_address, "server_address")
        if not server_name:
            raise ConfigError("server_name must be the name the server was started with")
        self.server_name = server_name
        self.db_address = db_address
        if timeout_s is not None and timeout_s <= 0:
            raise ConfigError(f"timeout_s must be positive or None, got {timeout_s!r}")
        self.timeout_s = timeout_s
        self.max_message_bytes = max_message_bytes
        self.client_id = uuid.uuid4().bytes
        self._ids = itertools.count(1)
        self._socket: zmq.Socket[bytes] | None = None
        self._rcvtimeo_ms = -1
        self._pid = os.getpid()

    # public --------------------------------------------------------------------

    def job(
        self,
        function: str,
        message: bytes,
        *,
        timeout_s: float | object | None = _UNSET,
        extra: dict[str, object] | None = None,
    ) -> bytes:
        """Run ``function`` (``'foo'`` or ``'server.foo'``) on ``message``; return its bytes."""
        if not isinstance(message, bytes | bytearray | memoryview):
            raise TypeError(f"message must be bytes, got {type(message).__name__}")
        header = Header(Kind.JOB, 0, self.client_id, self._qualify(function), extra=extra)
        return self._request(header, [bytes(message)], timeout_s)[0]

    def ping(self, *, timeout_s: float | object | None = _UNSET) -> float:
        """Round-trip time to the server in seconds."""
        start = time.perf_counter()
        self._request(Header(Kind.PING, 0, self.client_id), [], timeout_s)
        return time.perf_counter() - start

    def info(self, *, timeout_s: float | object | None = _UNSET) -> dict[str, object]:
        """The server's description: name, functions, address, pid, counters."""
        import msgpack

        payloads = self._request(Header(Kind.INFO, 0, self.client_id), [], timeout_s)
        info = msgpack.unpackb(payloads[0], raw=False)
        if not isinstance(info, dict):
            raise ProtocolError("INFO reply is not a map")
        return info

    def close(self) -> None:
        """Close the socket; the next call opens a new one."""
        if self._socket is not None:
            self._socket.close(0)
            self._socket = None

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # internals -----------------------------------------------------------------

    def _qualify(self, function: str) -> str:
        if not isinstance(function, str) or not function:
            raise ConfigError("function must be a non-empty string")
        if "." in function:
            return function
        return f"{self.server_name}.{function}"

    def _sock(self) -> zmq.Socket[bytes]:
        if self._socket is None or self._pid != os.getpid():
            self._pid = os.getpid()
            sock = make_socket(zmq.DEALER, identity=self.client_id + uuid.uuid4().bytes[:4])
            sock.connect(self.server_address)
            self._socket = sock
            self._rcvtimeo_ms = -1
        return self._socket

    def _request(
        self, header: Header, payloads: Sequence[bytes], timeout_s: float | object | None
    ) -> list[bytes]:
        """Send one request and return the payloads of its reply (raising its error)."""
        timeout = self.timeout_s if timeout_s is _UNSET else timeout_s
        assert timeout is None or isinstance(timeout, int | float)
        header.id = next(self._ids)
        # the reply a server sends when all went well, known in advance (compact form)
        expected: bytes | None = None
        if len(payloads) == 1 and len(payloads[0]) < COMPACT_BELOW_BYTES:
            head = header.to_wire()
            frames = [compact(head, payloads[0])]
            answer = reply_head(head)
            if answer is not None:
                expected = compact(answer)
        else:
            frames = [header.to_wire(), *payloads]
        size = sum(len(f) for f in frames)
        if size > self.max_message_bytes:
            raise PayloadTooLarge(size, self.max_message_bytes)
        sock = self._sock()
        send_frames(sock, frames)
        deadline = None if timeout is None else time.monotonic() + timeout
        wait_ms = -1 if timeout is None else int(timeout * 1000)  # the same call after call
        while True:
            if wait_ms != self._rcvtimeo_ms:  # a blocking receive with a timeout, no poller
                sock.setsockopt(zmq.RCVTIMEO, wait_ms)
                self._rcvtimeo_ms = wait_ms
            try:
                reply_frames = sock.recv_multipart()
            except zmq.Again:
                self.close()
                raise TimeoutError(
                    f"no reply from server {self.server_name!r} at {self.server_address} "
                    f"to {header.function or Kind.NAMES[header.kind]} within {timeout} s"
                ) from None
            if expected is not None and len(reply_frames) == 1:
                frame = reply_frames[0]
                if frame.startswith(expected):  # our result, no error: skip decoding
                    return [frame[len(expected) :]]
            try:
                reply, results = decode(reply_frames)
            except ProtocolError:
                reply = None  # garbage from a confused peer: keep waiting for ours
            if reply is None or reply.id != header.id:  # or a late reply to an abandoned call
                if deadline is not None:
                    wait_ms = max(0, int((deadline - time.monotonic()) * 1000))
                continue
            if reply.errors:
                info = reply.errors[0]
                raise info.to_exception(function=header.function)
            return results
