"""The ``db_address`` endpoint of masters and stages: ping, info and the shared cache.

Requests come on a ROUTER socket; each is answered on it, by identity.
A cache backend that fails is reported to the caller as an error; the
endpoint keeps serving.
"""

from __future__ import annotations

from collections.abc import Callable

import zmq

from palm.errors import PayloadTooLarge, ProtocolError
from palm.state.cache import Cache
from palm.wire.messages import routed
from palm.wire.protocol import ErrorInfo, Header, Kind, MalformedCounter, check_size

__all__ = ["DbEndpoint"]


class DbEndpoint:
    """A stage's ``db_address``: ping, info and the shared cache."""

    def __init__(
        self,
        sock: zmq.Socket[bytes],
        name: str,
        cache: Cache,
        describe: Callable[[str | None], bytes],
        malformed: MalformedCounter,
        max_message_bytes: int,
    ) -> None:
        self.sock = sock
        self.name = name
        self.cache = cache
        self.describe = describe
        self.malformed = malformed
        self.max_message_bytes = max_message_bytes
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

    def on_message(self, frames: list[bytes]) -> None:
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
        try:
            if header.kind == Kind.PING:
                self._reply(identity, reply, [b"pong"])
            elif header.kind == Kind.INFO:
                self._reply(identity, reply, [self.describe(self.peer_role)])
            elif header.kind == Kind.CACHE_SET:
                key = self.cache.set(payloads[0] if payloads else b"", header.key)
                reply.key = key
                self._reply(identity, reply, [key.encode()])
            elif header.kind == Kind.CACHE_GET:
                value = self.cache.get(header.key or "")
                if value is None:
                    reply.errors = [
                        ErrorInfo(0, "KeyError", f"no cache key {header.key!r}", "", self.name)
                    ]
                    value = b""
                self._reply(identity, reply, [value])
            elif header.kind == Kind.CACHE_DELETE:
                deleted = self.cache.delete(header.key or "")
                self._reply(identity, reply, [b"1" if deleted else b"0"])
            else:
                self.malformed.record(f"unexpected {Kind.NAMES[header.kind]} on the db socket")
        except Exception as exc:  # the cache backend failed: tell the caller, keep serving
            reply.errors = [ErrorInfo(0, f"palm.{type(exc).__name__}", str(exc), "", self.name)]
            self._reply(identity, reply, [b""])

    def _reply(self, identity: bytes, header: Header, payloads: list[bytes]) -> None:
        try:
            self.sock.send_multipart([identity, header.to_wire(), *payloads], zmq.NOBLOCK)
        except zmq.ZMQError:
            pass
