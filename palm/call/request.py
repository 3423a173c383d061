"""The standalone client: ``Client(address, server_name).job('foo', b'...')``.

Each call sends one message on a DEALER socket and waits for the reply with
the same message id. On a timeout the socket is thrown away and a fresh one
is made for the next call (the Lazy Pirate pattern), so a late reply to an
abandoned call can never be taken for the answer to a new one.
"""

from __future__ import annotations

import os
import time
import uuid
from collections.abc import Sequence

import zmq

from palm.call.base import DEFAULT, DEFAULT_TIMEOUT_S, ClientBase, Timeout
from palm.errors import PayloadTooLarge, ProtocolError, TimeoutError
from palm.wire.messages import COMPACT_BELOW_BYTES, compact, job_head, reply_head
from palm.wire.protocol import (
    DEFAULT_MAX_MESSAGE_BYTES,
    Header,
    Kind,
    decode,
)
from palm.wire.security import KeysOption
from palm.wire.sockets import check_endpoint, make_socket, recv_frames, send_frames

__all__ = ["DEFAULT_TIMEOUT_S", "Client"]

_getpid = os.getpid

#: Functions a client keeps the header tail of (see ``Client.job``).
_KEPT_TAILS = 256


class Client(ClientBase[tuple[zmq.Socket[bytes]]]):
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
        keys: KeysOption = None,
    ) -> None:
        self.server_address = check_endpoint(server_address, "server_address")
        super().__init__(
            server_name,
            db_address,
            timeout_s=timeout_s,
            max_message_bytes=max_message_bytes,
            keys=keys,
            needs="server_name must be the name the server was started with",
        )
        self._rcvtimeo_ms = -1
        #: the header tail of a plain job, by the function name as called
        self._tails: dict[str, tuple[bytes, str]] = {}

    # public --------------------------------------------------------------------

    def job(
        self,
        function: str,
        message: bytes,
        *,
        timeout_s: Timeout = DEFAULT,
        extra: dict[str, object] | None = None,
        request_id: str | None = None,
    ) -> bytes:
        """Run ``function`` (``'foo'`` or ``'server.foo'``) on ``message``; return its bytes.

        ``request_id`` (an HTTP request's) goes with the job into the server's logs.
        """
        if not isinstance(message, bytes | bytearray | memoryview):
            raise TypeError(f"message must be bytes, got {type(message).__name__}")
        message = bytes(message)
        if extra is None and not request_id and len(message) < COMPACT_BELOW_BYTES:
            # the common call: its header made from the function's, kept (job_tail)
            kept = self._tails.get(function) if type(function) is str else None
            if kept is None:  # (qualify() says what is wrong with a name that is no str)
                kept = self._tail_for(function)
            tail, qualified = kept
            job_id = next(self.ids)
            head = job_head(job_id, tail)
            answer = reply_head(head)
            assert answer is not None  # job_head begins as reply_head expects
            frames = [compact(head, message)]
            return self._exchange(job_id, qualified, frames, compact(answer), timeout_s)[0]
        if request_id:
            extra = dict(extra or {}, request_id=request_id)
        header = Header(Kind.JOB, 0, self.client_id, self.qualify(function), extra=extra)
        return self._request(header, [message], timeout_s)[0]

    def ping(self, *, timeout_s: Timeout = DEFAULT) -> float:
        """Round-trip time to the server in seconds."""
        start = time.perf_counter()
        self._request(Header(Kind.PING, 0, self.client_id), [], timeout_s)
        return time.perf_counter() - start

    def info(self, *, timeout_s: Timeout = DEFAULT) -> dict[str, object]:
        """The server's description: name, functions, address, pid, counters."""
        import msgpack

        payloads = self._request(Header(Kind.INFO, 0, self.client_id), [], timeout_s)
        info = msgpack.unpackb(payloads[0], raw=False)
        if not isinstance(info, dict):
            raise ProtocolError("INFO reply is not a map")
        return info

    # internals -----------------------------------------------------------------

    def _make_sockets(self) -> tuple[zmq.Socket[bytes]]:
        # an identity of its own per socket: a recycled socket's late replies stay with it
        sock = make_socket(
            zmq.DEALER, identity=self.client_id + uuid.uuid4().bytes[:4], curve=self.security
        )
        sock.connect(self.server_address)
        self._bound_sends(sock)
        self._rcvtimeo_ms = -1
        return (sock,)

    def _sock(self) -> zmq.Socket[bytes]:
        socks = self._sockets
        if socks is None or self._pid != _getpid():
            socks = self._open()
        return socks[0]

    def _tail_for(self, function: str) -> tuple[bytes, str]:
        """The header tail (:func:`~palm.wire.messages.job_tail`) of a plain job of
        ``function`` and its qualified name, kept for the next calls."""
        qualified = self.qualify(function)
        head = Header(Kind.JOB, 0, self.client_id, qualified).to_wire()
        kept = head[len(job_head(0, b"")) :], qualified
        if len(self._tails) >= _KEPT_TAILS:
            self._tails.clear()
        self._tails[function] = kept
        return kept

    def _request(
        self, header: Header, payloads: Sequence[bytes], timeout_s: Timeout
    ) -> list[bytes]:
        """Send one request and return the payloads of its reply (raising its error)."""
        header.id = next(self.ids)
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
        return self._exchange(header.id, header.function, frames, expected, timeout_s, header.kind)

    def _exchange(
        self,
        job_id: int,
        function: str,
        frames: list[bytes],
        expected: bytes | None,
        timeout_s: Timeout,
        kind: int = Kind.JOB,
    ) -> list[bytes]:
        """Send the request ``frames`` (a ``kind`` message with id ``job_id``, for
        ``function``) and return the payloads of its reply, raising its error. A
        one-frame reply that begins with ``expected`` (the compact reply to all
        going well) is not decoded."""
        timeout = self.resolve_timeout(timeout_s)
        size = len(frames[0]) if len(frames) == 1 else sum(len(f) for f in frames)
        if size > self.max_message_bytes:
            raise PayloadTooLarge(size, self.max_message_bytes)
        sock = self._sock()
        try:
            send_frames(sock, frames)
        except zmq.Again:  # never connected (refused at the CURVE handshake?)
            self.recycle()
            raise TimeoutError(
                f"could not send to server {self.server_name!r} at {self.server_address} "
                f"within {timeout} s (refused at the CURVE handshake?)"
            ) from None
        deadline = None if timeout is None else time.monotonic() + timeout
        wait_ms = -1 if timeout is None else int(timeout * 1000)  # the same call after call
        while True:
            if wait_ms != self._rcvtimeo_ms:  # a blocking receive with a timeout, no poller
                sock.setsockopt(zmq.RCVTIMEO, wait_ms)
                self._rcvtimeo_ms = wait_ms
            try:
                reply_frames = recv_frames(sock)
            except zmq.Again:
                self.recycle()
                raise TimeoutError(
                    f"no reply from server {self.server_name!r} at {self.server_address} "
                    f"to {function or Kind.NAMES[kind]} within {timeout} s"
                ) from None
            if expected is not None and len(reply_frames) == 1:
                frame = reply_frames[0]
                if frame.startswith(expected):  # our result, no error: skip decoding
                    return [frame[len(expected) :]]
            try:
                reply, results = decode(reply_frames)
            except ProtocolError:
                reply = None  # garbage from a confused peer: keep waiting for ours
            if reply is None or reply.id != job_id:  # or a late reply to an abandoned call
                if deadline is not None:
                    wait_ms = max(0, int((deadline - time.monotonic()) * 1000))
                continue
            if reply.errors:
                info = reply.errors[0]
                raise info.to_exception(function=function)
            return results
