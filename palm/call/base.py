"""What every palm client is made of: addresses, identity, job ids, timeouts, session, lifecycle.

:class:`ClientBase` is the one core under the clients of :mod:`palm.call`:

* the request/reply :class:`~palm.call.request.Client` (one DEALER);
* :class:`PairClient`, a PUSH into a master's or chain's ``pull_address`` and
  a DEALER, named by the client id, on its ``push_address``, under
  :class:`~palm.call.parallel.ParallelClient`,
  :class:`~palm.call.chain.StreamClient`,
  :class:`~palm.call.shared.SharedClient` and
  :class:`~palm.call.aio.AsyncSharedClient`.

A client goes through three states (:class:`ClientState`), as an
``httpx.Client`` does::

    UNOPENED --first call--> OPENED --close()--> CLOSED

Its sockets are made on first use, and again in a forked child (sockets do
not cross a ``fork``). ``close()`` may be called any number of times; a call
after it raises :class:`~palm.errors.ClientClosed`. Throwing the sockets away
after a timeout (:meth:`ClientBase.recycle`, the Lazy Pirate pattern) is not a
close: the next call makes new ones.

Timeouts: ``timeout_s=`` of a call is a :data:`Timeout`, seconds, ``None``
(wait forever) or :data:`DEFAULT` (the client's ``timeout_s``, itself
:data:`DEFAULT_TIMEOUT_S` unless given).
"""

from __future__ import annotations

import enum
import os
import uuid
from typing import Any, Final, Generic, Literal, Self, TypeAlias, TypeVar

import zmq

from palm.call.jobs import JobIds
from palm.errors import ClientClosed, ConfigError, PayloadTooLarge, TimeoutError
from palm.wire.discovery import CacheClient
from palm.wire.protocol import DEFAULT_MAX_MESSAGE_BYTES
from palm.wire.security import KeysOption, security_for
from palm.wire.session import Session
from palm.wire.sockets import check_endpoint, make_socket

__all__ = [
    "DEFAULT",
    "DEFAULT_TIMEOUT_S",
    "ClientBase",
    "ClientState",
    "Default",
    "Pair",
    "PairClient",
    "Timeout",
]

#: How long a call waits (for its reply, or for any result of a stream) unless told otherwise.
DEFAULT_TIMEOUT_S: Final = 60.0


class Default(enum.Enum):
    """The type of :data:`DEFAULT`: "the client's own setting"."""

    DEFAULT = "DEFAULT"

    def __repr__(self) -> str:
        return "DEFAULT"


#: A call's ``timeout_s`` when not given: the client's ``timeout_s``.
DEFAULT: Final = Default.DEFAULT

#: What a call's ``timeout_s`` may be: seconds, None (no limit) or :data:`DEFAULT`.
Timeout: TypeAlias = float | Literal[Default.DEFAULT] | None


class ClientState(enum.Enum):
    """Where a client is in its life."""

    UNOPENED = 1  # no socket made yet
    OPENED = 2  # sockets made (they may be recycled: still open)
    CLOSED = 3  # closed for good


Sockets = TypeVar("Sockets", bound=tuple[zmq.Socket[bytes], ...])

#: A :class:`PairClient`'s sockets: the PUSH that sends jobs, the DEALER that receives.
Pair: TypeAlias = tuple[zmq.Socket[bytes], zmq.Socket[bytes]]


def check_timeout(timeout_s: float | None) -> float | None:
    if timeout_s is not None and timeout_s <= 0:
        raise ConfigError(f"timeout_s must be positive or None, got {timeout_s!r}")
    return timeout_s


class ClientBase(Generic[Sockets]):
    """The core of a palm client; its sockets are what :meth:`_make_sockets` makes.

    Public for the faces built on it: :attr:`client_id`, :attr:`ids` (the
    client's job ids), :attr:`session` (its HELLO/WELCOME bookkeeping),
    :meth:`qualify`, :meth:`resolve_timeout`, :meth:`payload`,
    :meth:`sockets`, :meth:`recycle`, :meth:`ensure_open`, :meth:`close`.
    Subclasses implement :meth:`_make_sockets` (and may extend :meth:`close`).
    """

    def __init__(
        self,
        server_name: str,
        db_address: str | None = None,
        *,
        timeout_s: float | None = DEFAULT_TIMEOUT_S,
        max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES,
        heartbeat_interval_s: float = 1.0,
        keys: KeysOption = None,
        needs: str = "server_name must name the server",
    ) -> None:
        if not server_name:
            raise ConfigError(needs)
        self.server_name = server_name
        self.db_address = db_address
        self.timeout_s = check_timeout(timeout_s)
        self.max_message_bytes = max_message_bytes
        self.heartbeat_interval_s = heartbeat_interval_s
        #: CURVE with the client key pair (``keys=`` or PALM_KEYS; None: plain)
        self.security = security_for(keys, "client")
        self.client_id = uuid.uuid4().bytes
        #: the client's job ids: each message takes the next ones (consecutive for a batch)
        self.ids = JobIds(1)
        #: HELLO/WELCOME bookkeeping for :attr:`client_id`
        self.session = Session(self.client_id, heartbeat_interval_s)
        self.state = ClientState.UNOPENED
        self._sockets: Sockets | None = None
        self._pid = os.getpid()
        self._cache: CacheClient | None = None

    # what subclasses make ---------------------------------------------------------

    def _make_sockets(self) -> Sockets:
        """New connected sockets for this client (called by :meth:`sockets`)."""
        raise NotImplementedError

    # lifecycle ----------------------------------------------------------------------

    @property
    def closed(self) -> bool:
        return self.state is ClientState.CLOSED

    def ensure_open(self) -> None:
        """Raise :class:`~palm.errors.ClientClosed` when the client was closed."""
        if self.state is ClientState.CLOSED:
            raise ClientClosed(f"the client of {self.server_name!r} is closed")

    def sockets(self) -> Sockets:
        """The client's sockets, made on first use and again in a forked child."""
        socks = self._sockets
        if socks is None or self._pid != os.getpid():
            socks = self._open()
        return socks

    def _open(self) -> Sockets:
        self.ensure_open()
        if self._pid != os.getpid():
            self._pid = os.getpid()
            self._cache = None  # the parent's: left alone
        self._sockets = socks = self._make_sockets()
        self.state = ClientState.OPENED
        return socks

    def recycle(self) -> None:
        """Throw the sockets away (what they hold is forgotten); the next call makes
        new ones. Not a close: after a timeout a late reply must not be taken for
        the answer to a new call (the Lazy Pirate pattern)."""
        socks, self._sockets = self._sockets, None
        if socks is not None and self._pid == os.getpid():
            for sock in socks:
                sock.close(0)

    def close(self) -> None:
        """Close the sockets and the cache connection; later calls raise
        :class:`~palm.errors.ClientClosed`. Closing again does nothing."""
        if self.state is ClientState.CLOSED:
            return
        self.state = ClientState.CLOSED
        self._release()

    def _release(self) -> None:
        """Close the sockets and the cache connection (what :meth:`close` ends with)."""
        self.recycle()
        if self._cache is not None:
            self._cache.close()
            self._cache = None

    def __enter__(self) -> Self:
        self.ensure_open()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # what every call needs --------------------------------------------------------

    def qualify(self, function: str) -> str:
        """``'foo'`` as ``'<server_name>.foo'``; a qualified name (or route) as it is."""
        if not isinstance(function, str) or not function:
            raise ConfigError("function must be a non-empty string")
        return function if "." in function else f"{self.server_name}.{function}"

    def resolve_timeout(self, timeout_s: Timeout) -> float | None:
        """A call's timeout in seconds (None: none): ``DEFAULT`` is the client's."""
        if timeout_s is Default.DEFAULT:
            return self.timeout_s
        return check_timeout(timeout_s)

    def payload(self, payload: Any) -> bytes:
        """``payload`` as bytes, checked to be bytes-like and within the size limit."""
        if not isinstance(payload, bytes | bytearray | memoryview):
            raise TypeError(f"job payloads must be bytes, got {type(payload).__name__}")
        data = bytes(payload)
        if len(data) > self.max_message_bytes:
            raise PayloadTooLarge(len(data), self.max_message_bytes)
        return data

    def _bound_sends(self, *socks: zmq.Socket[bytes]) -> None:
        """A peer refused at the handshake (no key, a wrong key, or a plain peer of
        a CURVE server) is never connected again: libzmq drops the connection for
        good, so a send could wait for ever. A send waits at most the client's
        timeout, then raises ``zmq.Again`` (the calls turn it into a TimeoutError)."""
        if self.timeout_s is not None:
            for sock in socks:
                sock.setsockopt(zmq.SNDTIMEO, max(1, int(self.timeout_s * 1000)))

    def _cache_client(self) -> CacheClient:
        """The connection to the cluster's cache (for :class:`~palm.wire.discovery.CacheCalls`)."""
        self.ensure_open()
        if self._cache is None:
            if not self.db_address:
                raise ConfigError("this client has no db_address for the cache")
            self._cache = CacheClient(self.db_address, keys=self.security or False)
        return self._cache


class PairClient(ClientBase[Pair]):
    """A client that PUSHes jobs into ``pull_address`` and receives on ``push_address``.

    Address names follow the server's: ``pull_address`` is where a master (or
    a chain's first stage) pulls jobs from, ``push_address`` where results come
    back (a ROUTER; the client's DEALER is named by its client id).
    """

    def __init__(
        self,
        push_address: str,
        pull_address: str,
        db_address: str | None,
        server_name: str,
        **options: Any,
    ) -> None:
        self.push_address = check_endpoint(push_address, "push_address")
        self.pull_address = check_endpoint(pull_address, "pull_address")
        super().__init__(server_name, db_address, **options)

    def unwelcomed(self, function: str, waited_s: float) -> TimeoutError:
        """The timeout of calls whose jobs never left: no WELCOME came for the HELLOs.

        A client sends jobs only to a master whose session it knows, so that a
        master that dies before it answers cannot take jobs with it unnoticed.
        """
        return TimeoutError(
            f"master {self.server_name!r} at {self.push_address} did not answer HELLO "
            f"for {waited_s:.1f} s (not running, unreachable, or refusing this client's "
            f"keys); jobs of {function} were not sent"
        )

    def _make_sockets(self) -> Pair:
        push = make_socket(zmq.PUSH, hwm=10_000, max_message_bytes=None, curve=self.security)
        push.connect(self.pull_address)
        dealer = make_socket(zmq.DEALER, identity=self.client_id, curve=self.security)
        # a blocking receive waits at most a heartbeat interval
        dealer.setsockopt(zmq.RCVTIMEO, max(1, int(self.heartbeat_interval_s * 1000)))
        dealer.connect(self.push_address)
        self._bound_sends(push, dealer)
        return push, dealer
