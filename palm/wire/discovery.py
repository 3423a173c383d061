"""Cache calls against a master's ``db_address``: ``set``, ``get``, ``delete``;
and :func:`server_info`, what a server says of itself there (INFO).

A failure to reach the master, or a cache backend that fails behind it,
raises :class:`palm.errors.StateError`; a missing key raises ``KeyError``.
"""

from __future__ import annotations

import itertools
import os

import zmq

from palm.errors import ConfigError, ProtocolError, StateError, TimeoutError
from palm.wire.info import ServiceInfo
from palm.wire.messages import control
from palm.wire.protocol import Header, Kind, decode
from palm.wire.security import KeysOption, Security, security_for
from palm.wire.sockets import check_endpoint, make_socket

__all__ = ["CacheCalls", "CacheClient", "server_info"]


class CacheClient:
    """A client of the shared cache a master serves on its ``db_address``."""

    def __init__(self, db_address: str, *, timeout_s: float = 5.0, keys: KeysOption = None) -> None:
        self.db_address = check_endpoint(db_address, "db_address")
        #: CURVE as a client (``keys=`` or PALM_KEYS; a Security keeps its role)
        self.security = security_for(keys, "client")
        self.timeout_s = timeout_s
        self._ids = itertools.count(1)
        self._socket: zmq.Socket[bytes] | None = None
        self._pid = os.getpid()

    def set(self, value: bytes, key: str | None = None) -> str:
        if not isinstance(value, bytes | bytearray | memoryview):
            raise TypeError(f"cache values are bytes, got {type(value).__name__}")
        header, payloads = self._call(Header(Kind.CACHE_SET, key=key), [bytes(value)])
        return header.key or payloads[0].decode()

    def get(self, key: str) -> bytes:
        header, payloads = self._call(Header(Kind.CACHE_GET, key=key), [], missing_ok=True)
        if header.errors:
            raise KeyError(key)
        return payloads[0]

    def delete(self, key: str) -> bool:
        _, payloads = self._call(Header(Kind.CACHE_DELETE, key=key), [])
        return payloads[0] == b"1"

    def close(self) -> None:
        if self._socket is not None:
            self._socket.close(0)
            self._socket = None

    def _call(
        self, header: Header, payloads: list[bytes], missing_ok: bool = False
    ) -> tuple[Header, list[bytes]]:
        if self._socket is None or self._pid != os.getpid():
            self._pid = os.getpid()
            self._socket = make_socket(zmq.DEALER, curve=self.security)
            self._socket.connect(self.db_address)
        sock = self._socket
        header.id = next(self._ids)
        sock.send_multipart([header.to_wire(), *payloads])
        while True:
            if not sock.poll(int(self.timeout_s * 1000), zmq.POLLIN):
                self.close()
                raise StateError(
                    f"the cache at {self.db_address} did not answer within {self.timeout_s} s"
                )
            try:
                reply, results = decode(sock.recv_multipart())
            except ProtocolError:
                continue
            if reply.id != header.id:
                continue
            if reply.errors and not (missing_ok and reply.errors[0].type == "KeyError"):
                info = reply.errors[0]
                raise StateError(f"cache {Kind.NAMES[header.kind]} failed: {info.message}")
            if not results:
                results = [b""]
            return reply, results


class CacheCalls:
    """``set``/``get``/``delete`` for clients with a ``db_address`` (a mixin)."""

    db_address: str | None
    _cache: CacheClient | None
    security: Security | None = None

    def _cache_client(self) -> CacheClient:
        if self._cache is None:
            if not self.db_address:
                raise ConfigError("this client has no db_address for the cache")
            self._cache = CacheClient(self.db_address, keys=self.security or False)
        return self._cache

    def set(self, value: bytes, key: str | None = None) -> str:
        """Store ``value`` in the cluster's shared cache; return its key."""
        return self._cache_client().set(value, key)

    def get(self, key: str) -> bytes:
        """The cached value under ``key`` (KeyError when there is none)."""
        return self._cache_client().get(key)

    def delete(self, key: str) -> bool:
        """Remove ``key`` from the cache; False if it was not there."""
        return self._cache_client().delete(key)


def server_info(db_address: str, timeout_s: float, server_name: str = "") -> ServiceInfo:
    """What the server answering at ``db_address`` says of itself (INFO)."""
    check_endpoint(db_address, "db_address")
    sock = make_socket(zmq.DEALER)
    sock.connect(db_address)
    try:
        sock.send_multipart(control(Kind.INFO, id=1))
        if not sock.poll(int(timeout_s * 1000), zmq.POLLIN):
            who = f"server {server_name!r}" if server_name else "no server"
            raise TimeoutError(f"no answer from {who} at {db_address}")
        try:
            _, payloads = decode(sock.recv_multipart())
            return ServiceInfo.from_wire(payloads[0])
        except (ProtocolError, IndexError) as exc:
            raise ProtocolError(f"bad INFO answer from {db_address}") from exc
    finally:
        sock.close(0)
