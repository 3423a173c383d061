"""Payloads as a function wants them: ``bytes`` by default, or a read-only
``memoryview`` of the received frame for a function marked :func:`zero_copy`.

A worker receives a large payload (64 KiB or more) in place, in ZeroMQ's
buffer. A plain function gets it as ``bytes`` (one copy); a function marked
with :func:`zero_copy` gets a read-only ``memoryview`` of that buffer (no
copy). Either way, a result that *is* the payload it was given (an echo, a
pass-through, a slice of the view) goes back out by reference to the
received buffer: no copy and nothing lent to pyzmq's garbage thread.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from types import MethodType
from typing import Any, TypeVar, cast

import zmq

from palm.wire.protocol import all_bytes

__all__ = [
    "Received",
    "as_call_payloads",
    "is_zero_copy",
    "kept_view",
    "restore_received",
    "zero_copy",
]

_F = TypeVar("_F", bound=Callable[..., Any])
_MARK = "_palm_zero_copy"


def zero_copy(func: _F) -> _F:
    """Mark a worker function as taking its payload as a read-only ``memoryview``.

    ::

        class Resize(Worker):
            @zero_copy
            def thumbnail(self, image: memoryview) -> bytes:
                return shrink(image)

    The view shows the received frame itself (no copy); it may be returned
    whole or sliced, or the function may return ``bytes``, ``bytearray`` or
    any other ``memoryview``. The frame stays alive as long as the view (or
    a slice of it) does: a function that keeps one after it returns keeps the
    whole received message in memory, so keep ``bytes(view)`` instead.
    """
    setattr(func, _MARK, True)
    return func


def is_zero_copy(func: object) -> bool:
    """Whether ``func`` (a function or a bound method) was marked :func:`zero_copy`."""
    # a bound method's function holds the mark: read its __dict__ (a lookup that
    # misses on the method itself costs an AttributeError on every message)
    target = func.__func__ if type(func) is MethodType else func
    attrs = getattr(target, "__dict__", None)
    return type(attrs) is dict and attrs.get(_MARK) is True


#: ``id()`` of each bytes copy of a received view -> (that copy, the view)
Received = dict[int, tuple[bytes, memoryview]]


def as_call_payloads(
    func: object, payloads: Sequence[bytes]
) -> tuple[list[bytes], Received | None]:
    """The payloads to call ``func`` with, and the received views behind them.

    A :func:`zero_copy` function gets read-only memoryviews (the received
    frame's, else one of the bytes); any other function gets bytes, a
    received view copied once. The second item holds each bytes copy with the
    view it copies (None when nothing was copied), for :func:`restore_received`.
    """
    if is_zero_copy(func):
        return [cast(bytes, _readonly(p)) for p in payloads], None
    # all bytes (small payloads): as they are; one payload tested alone, many in one pass in C
    if (type(payloads[0]) is bytes) if len(payloads) == 1 else all_bytes(payloads):
        return payloads if type(payloads) is list else list(payloads), None
    out: list[bytes] = []
    received: Received = {}
    for payload in cast(Sequence[Any], payloads):
        if type(payload) is bytes:
            out.append(payload)
            continue
        copy = bytes(payload)
        if type(payload) is memoryview:
            received[id(copy)] = (copy, payload)
        out.append(copy)
    return out, received or None


def restore_received(results: list[bytes], received: Received | None) -> list[bytes]:
    """``results`` with each result that *is* one of the bytes copies in
    ``received`` replaced by the received view it copies (sent on by reference)."""
    if not received:
        return results
    out = []
    for result in results:
        entry = received.get(id(result))
        out.append(cast(bytes, entry[1]) if entry is not None and entry[0] is result else result)
    return out


def kept_view(result: memoryview) -> memoryview | None:
    """``result`` as a byte view to send as it is, or None when it must be copied.

    A view of a received frame or of ``bytes`` (immutable: nothing can change
    it while ZeroMQ sends it) is kept, as a flat view of bytes; one of a
    mutable object (a ``bytearray`` the function may change again) is not.
    """
    owner: object = result.obj
    if type(owner) is not bytes and type(owner) is not zmq.Frame:
        return None
    if result.ndim == 1 and result.format == "B":
        return result
    if result.c_contiguous:
        return result.cast("B")
    return None


def _readonly(payload: bytes | memoryview) -> memoryview:
    view = payload if type(payload) is memoryview else memoryview(payload)
    return view if view.readonly else view.toreadonly()
