"""The ZAP authenticator of a binding process: which keys each socket accepts.

One :class:`zmq.auth.thread.ThreadAuthenticator` per process, on palm's
ZeroMQ context, started with the first CURVE socket a server binds and
stopped when the last one closes. Each bound socket gets a ZAP domain of its
own (:func:`open_door`), naming the roles it accepts:

* ``worker_push`` / ``worker_pull`` (a master's worker sockets): workers only;
* ``address``, ``pull``, ``push`` (what clients and other stages connect to):
  clients and stages;
* ``db``: clients, workers (they look the master's worker addresses up
  there) and stages.

A peer whose key is in none of those roles' allow-lists is refused at the
handshake: it gets nothing, and the refusal is counted and logged once per
burst (:class:`Refusals`). The User-Id of an accepted peer is its role name,
so a handler can read it from a frame (``frame.get('User-Id')``).
"""

from __future__ import annotations

import itertools
import logging
import os
import threading
import time
from typing import Final

import zmq
from zmq.auth.thread import ThreadAuthenticator
from zmq.utils import z85

from palm.wire.security import Security
from palm.wire.sockets import context

__all__ = ["ACCEPTS", "Door", "Refusals", "accepts_for", "open_door"]

log = logging.getLogger(__name__)

#: The roles each kind of bound socket accepts, by the label it is bound under.
ACCEPTS: Final[dict[str, tuple[str, ...]]] = {
    "worker_push": ("worker",),
    "worker_pull": ("worker",),
    "db": ("client", "worker", "stage"),
}
_DEFAULT_ACCEPTS: Final = ("client", "stage")


def accepts_for(label: str) -> tuple[str, ...]:
    """The roles a socket bound under ``label`` accepts."""
    return ACCEPTS.get(label, _DEFAULT_ACCEPTS)


class Refusals:
    """Counts peers refused at the handshake; logs them once per burst."""

    def __init__(self, owner: str, logger: logging.Logger | None = None, burst_s: float = 5.0):
        self.owner = owner
        self.total = 0
        self._logger = logger or log
        self._burst_s = burst_s
        self._last_log = -burst_s
        self._since_log = 0
        self._lock = threading.Lock()

    def record(self, reason: str) -> None:
        with self._lock:
            self.total += 1
            self._since_log += 1
            now = time.monotonic()
            if now - self._last_log < self._burst_s:
                return
            count, total = self._since_log, self.total
            self._last_log = now
            self._since_log = 0
        self._logger.warning(
            "%s refused %d peer(s) (%d in all); latest: %s", self.owner, count, total, reason
        )


class Door:
    """One bound socket's ZAP domain: its keys, the roles it accepts, its refusals."""

    def __init__(
        self,
        domain: str,
        security: Security,
        accepts: tuple[str, ...],
        label: str,
        refusals: Refusals,
    ) -> None:
        self.domain = domain
        self.security = security
        self.accepts = accepts
        self.label = label
        self.refusals = refusals

    def check(self, z85_key: bytes) -> str | None:
        """The role ``z85_key`` is accepted as here, or None (counted as refused)."""
        role = self.security.keys.role_of(z85_key, self.accepts)
        if role is None:
            self.refusals.record(
                f"a key allowed for none of {', '.join(self.accepts)} on {self.label}"
            )
        return role

    def close(self) -> None:
        _gate().release(self.domain)


class _Authenticator(ThreadAuthenticator):
    """A ThreadAuthenticator whose User-Id for a key is the role it was accepted as."""

    def __init__(self) -> None:
        super().__init__(context=context(), log=logging.getLogger("palm.auth"))
        self.roles: dict[bytes, str] = {}

    def curve_user_id(self, client_public_key: bytes) -> str:
        return self.roles.get(z85.encode(client_public_key), "anonymous")


class _Provider:
    """The credentials provider of one domain (called in the authenticator's thread)."""

    def __init__(self, door: Door, auth: _Authenticator) -> None:
        self.door = door
        self.auth = auth

    def callback(self, domain: str, key: bytes) -> bool:
        role = self.door.check(key)
        if role is None:
            return False
        self.auth.roles[key] = role
        return True


#: How long a new authenticator waits for the endpoints of one just stopped.
REBIND_S: Final = 5.0


def _started() -> _Authenticator:
    """A started authenticator. One stopped just before may still hold its
    inproc endpoints (ZeroMQ closes sockets in the background): retry a moment."""
    deadline = time.monotonic() + REBIND_S
    while True:
        auth = _Authenticator()
        try:
            auth.start()
            return auth
        except zmq.ZMQError as exc:
            for sock in (auth.zap_socket, auth.pipe):
                if sock is not None:
                    sock.close(0)
            if exc.errno != zmq.EADDRINUSE or time.monotonic() > deadline:
                raise
            time.sleep(0.01)


class _Gate:
    """This process's authenticator and the domains registered with it."""

    def __init__(self) -> None:
        self.pid = os.getpid()
        self.lock = threading.Lock()
        self.doors: dict[str, Door] = {}
        self.auth: _Authenticator | None = None
        self.ids = itertools.count(1)

    def open(
        self, security: Security, label: str, accepts: tuple[str, ...], refusals: Refusals
    ) -> Door:
        with self.lock:
            if self.auth is None:
                self.auth = _started()
            door = Door(f"palm-{label}-{next(self.ids)}", security, accepts, label, refusals)
            self.doors[door.domain] = door
            self.auth.configure_curve_callback(door.domain, _Provider(door, self.auth))
            return door

    def release(self, domain: str) -> None:
        with self.lock:
            if self.doors.pop(domain, None) is None or self.auth is None:
                return
            self.auth.credentials_providers.pop(domain, None)
            if not self.doors:
                self.auth.stop()
                self.auth = None


_the_gate: _Gate | None = None
_gate_lock = threading.Lock()


def _gate() -> _Gate:
    global _the_gate
    with _gate_lock:
        if _the_gate is None or _the_gate.pid != os.getpid():
            _the_gate = _Gate()  # after a fork: the parent's thread is not here
        return _the_gate


def open_door(
    security: Security, label: str, refusals: Refusals, accepts: tuple[str, ...] | None = None
) -> Door:
    """Register a ZAP domain for a socket bound under ``label`` (starting the
    process's authenticator if needed); set it on the socket with
    ``security.bind(sock, door.domain)``, and ``door.close()`` when the socket closes."""
    return _gate().open(security, label, accepts or accepts_for(label), refusals)
