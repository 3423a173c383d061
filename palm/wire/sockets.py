"""ZeroMQ sockets as palm uses them: one context per process, validated
endpoints, and the few socket options every palm socket sets."""

from __future__ import annotations

import os
import re
from typing import Any, cast

import zmq

from palm.errors import ConfigError
from palm.wire.allocator import keep_large_buffers
from palm.wire.security import Security

__all__ = [
    "as_bytes",
    "bound_endpoint",
    "check_endpoint",
    "context",
    "make_socket",
    "more_waiting",
    "recv_forwarded",
    "recv_frames",
    "send_frames",
]

# plain ints: pyzmq's flag enums cost a little on every frame of the hot paths
_SNDMORE = int(zmq.SNDMORE)
_EVENTS = int(zmq.EVENTS)
_POLLIN = int(zmq.POLLIN)
_COPY_BELOW_BYTES = 65536

_ENDPOINT = re.compile(r"^(tcp://[^:\s]+:(\d+|\*)|ipc://\S+|inproc://\S+)$")

_context: zmq.Context[zmq.Socket[bytes]] | None = None
_context_pid = 0


def context() -> zmq.Context[zmq.Socket[bytes]]:
    """This process's ZeroMQ context (a fresh one after fork)."""
    global _context, _context_pid
    if _context is None or _context_pid != os.getpid():
        keep_large_buffers()  # before ZeroMQ's I/O thread allocates its first message
        _context = zmq.Context()
        _context_pid = os.getpid()
    return _context


def check_endpoint(address: str, what: str = "address") -> str:
    """Return ``address`` if it is a full ZeroMQ endpoint, else raise ConfigError."""
    if not isinstance(address, str) or not _ENDPOINT.match(address):
        raise ConfigError(
            f"{what} must be a full ZeroMQ endpoint such as 'tcp://127.0.0.1:5555', got {address!r}"
        )
    return address


def make_socket(
    kind: int,
    *,
    hwm: int = 100_000,
    linger_ms: int = 0,
    identity: bytes | None = None,
    max_message_bytes: int | None = None,
    curve: Security | None = None,
) -> zmq.Socket[bytes]:
    """A socket of ``kind`` with palm's defaults for high-water marks and linger.

    With ``curve`` the socket is a CURVE client with that role's key pair, for
    connecting (binding sockets get theirs from :meth:`Security.bind`).
    """
    sock = context().socket(kind)
    if curve is not None:
        try:
            curve.connect(sock)
        except BaseException:
            sock.close(0)
            raise
    sock.setsockopt(zmq.LINGER, linger_ms)
    sock.setsockopt(zmq.SNDHWM, hwm)
    sock.setsockopt(zmq.RCVHWM, hwm)
    # a peer not bound yet (workers forked with their master) is retried soon, then
    # at doubling intervals: the first attempt at 100 ms held a cluster's start back
    sock.setsockopt(zmq.RECONNECT_IVL, 10)
    sock.setsockopt(zmq.RECONNECT_IVL_MAX, 5_000)
    if identity is not None:
        sock.setsockopt(zmq.IDENTITY, identity)
    if max_message_bytes is not None:
        # A hard safety net well above the limit that palm checks itself and
        # answers with a clear error: a peer sending more is disconnected.
        sock.setsockopt(zmq.MAXMSGSIZE, max_message_bytes * 4)
    return sock


def bound_endpoint(sock: zmq.Socket[bytes]) -> str:
    """The endpoint a socket is bound to, with the port the OS picked."""
    value = sock.getsockopt(zmq.LAST_ENDPOINT)
    assert isinstance(value, bytes)
    return value.decode()


def send_frames(sock: zmq.Socket[bytes], frames: list[bytes], flags: int = 0) -> None:
    """``send_multipart`` for palm's hot paths: small frames copied, large ones not.

    A large frame :func:`recv_forwarded` kept in place (a ``memoryview`` of a
    received zmq frame) goes on as that frame: ZeroMQ shares its buffer with
    the new message (a reference count, no copy, no hand-off to pyzmq's
    garbage thread); a large ``bytes`` is lent to ZeroMQ until it is sent.
    """
    last = len(frames) - 1
    for i, frame in enumerate(cast(list[Any], frames)):
        if type(frame) is memoryview:
            frame = _received(frame)
        sock.send(
            frame, (flags | _SNDMORE) if i < last else flags, copy=len(frame) < _COPY_BELOW_BYTES
        )


def _received(view: memoryview) -> Any:
    """The zmq frame ``view`` shows whole (to send on by reference), else ``view``."""
    whole: Any = view.obj
    if type(whole) is zmq.Frame and view.nbytes == len(whole):
        return whole
    return view


def recv_frames(sock: zmq.Socket[bytes], flags: int = 0) -> list[bytes]:
    """``recv_multipart`` for palm's hot paths, with plain-int flags throughout.

    Each frame says itself whether another follows (``Frame.more``): asking
    the socket (``RCVMORE``, as ``recv_multipart`` does) costs more.
    """
    frame = sock.recv(flags, copy=False)
    frames = [frame.bytes]
    while frame.more:
        frame = sock.recv(flags, copy=False)
        frames.append(frame.bytes)
    return frames


def recv_forwarded(sock: zmq.Socket[bytes], flags: int = 0) -> list[bytes]:
    """:func:`recv_frames` for a process that sends payloads on without reading them.

    The first frame (the header) is bytes; a later frame of 64 KiB or more
    stays in ZeroMQ's buffer and comes as a read-only ``memoryview`` of it
    (bytes-like: ``len``, slicing and :func:`send_frames` take it as it is,
    and send it on without a copy); smaller ones are bytes. Whoever hands a
    payload to code that wants ``bytes`` converts it (:func:`as_bytes`).
    """
    first = sock.recv(flags, copy=False)
    frames: list[Any] = [first.bytes]
    more = first.more
    while more:
        frame = sock.recv(flags, copy=False)
        frames.append(frame.buffer if len(frame) >= _COPY_BELOW_BYTES else frame.bytes)
        more = frame.more
    return cast(list[bytes], frames)


def more_waiting(sock: zmq.Socket[bytes]) -> bool:
    """Whether ``sock`` holds another message now.

    The receiving loops read one message per wake-up, ask this once, and only
    when it says yes read on until a receive finds nothing. Asking costs one
    system call (libzmq polls its command pipe); a receive that finds nothing
    costs that and a Python exception (``zmq.Again``), more than twice as much,
    and a wake-up that brings one message is the common case away from peak
    load. Asking after every message would cost the most under load.
    """
    return bool(cast(int, sock.get(_EVENTS)) & _POLLIN)


def as_bytes(frames: list[bytes]) -> list[bytes]:
    """``frames`` with every zero-copy frame of :func:`recv_forwarded` made bytes."""
    if all(type(frame) is bytes for frame in frames):
        return frames
    return [frame if type(frame) is bytes else bytes(frame) for frame in frames]
