"""Building palm messages: the one place that lays out JOB messages, compact
frames and the frames a ROUTER socket hands over.

:mod:`palm.wire.protocol` says what a message is and reads it; this module
writes the messages every side sends, so the layout lives in one place:

* :func:`job_message`: a JOB message of one or more consecutive jobs, packed
  into one frame when they are small, with per-job HTTP request ids;
* :func:`compact` / :func:`encode_compact` / :func:`reply_head`: a single small
  job and its reply in one frame each way;
* :func:`routed`: the identity frame a ROUTER socket puts in front of a
  message, split off and the rest decoded;
* :func:`control`: HELLO, WELCOME, HEARTBEAT, BYE and the other header-only
  messages.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Final

from msgpack import packb

from palm.errors import ProtocolError
from palm.wire.protocol import (
    COMPACT_MARK,
    Header,
    Kind,
    decode,
    frames_for,
)

__all__ = [
    "COMPACT_BELOW_BYTES",
    "PACK_BELOW_BYTES",
    "compact",
    "compact_parts",
    "compact_reply",
    "control",
    "encode_compact",
    "job_head",
    "job_message",
    "job_tail",
    "reply_head",
    "routed",
]

#: Single payloads up to this size may travel compact (see :func:`encode_compact`).
COMPACT_BELOW_BYTES: Final = 16 * 1024

#: Payloads of a batch all at most this size travel packed in one frame.
PACK_BELOW_BYTES: Final = 16 * 1024

_MARK: Final = bytes([COMPACT_MARK])


def compact(head: bytes, payload: bytes = b"") -> bytes:
    """One frame holding an encoded header and one payload: mark, length, header, payload."""
    return _MARK + len(head).to_bytes(2, "big") + head + payload


def compact_parts(frame: bytes) -> tuple[bytes, int] | None:
    """The encoded header of a compact frame and where its payload starts, or None
    when ``frame`` is not a well-formed compact frame."""
    if len(frame) < 3 or frame[0] != COMPACT_MARK:
        return None
    end = 3 + int.from_bytes(frame[1:3], "big")
    if end > len(frame):
        return None
    return frame[3:end], end


def encode_compact(header: Header, payload: bytes) -> list[bytes]:
    """A one-payload message as a single frame.

    Request/reply traffic with small payloads saves a frame each way; every
    palm receiver reads both forms (:func:`palm.wire.protocol.decode`), and
    masters never get it.
    """
    return [compact(header.to_wire(), payload)]


#: How encoded JOB and RESULT headers begin: an 11-item array, the version, the kind.
_JOB_HEAD_START: Final = Header(Kind.JOB).to_wire()[:3]
_RESULT_HEAD_START: Final = Header(Kind.RESULT).to_wire()[:3]


def reply_head(head: bytes) -> bytes | None:
    """The encoded RESULT header answering the encoded JOB header ``head``, or None.

    A reply differs from its request only by its kind (``Header.reply``), so
    its bytes are the request's with the kind byte swapped, when the request
    is laid out as palm encodes it (an 11-item array, then the version and the
    kind as one byte each). None for anything else: encode the reply then.
    """
    if head[:3] != _JOB_HEAD_START:
        return None
    return _RESULT_HEAD_START + head[3:]


#: The length of an encoded job id by its first byte: a positive fixint, or a
#: uint8 to uint64 (0: anything else, which the general path reads).
_ID_LENGTH: Final = [1] * 0x80 + [0] * 0x80
_ID_LENGTH[0xCC], _ID_LENGTH[0xCD], _ID_LENGTH[0xCE], _ID_LENGTH[0xCF] = 2, 3, 5, 9

#: Where a compact frame's header starts, and its job id.
_HEAD_AT: Final = 3
_ID_AT: Final = _HEAD_AT + len(_JOB_HEAD_START)


def job_tail(frame: bytes) -> tuple[bytes, int] | None:
    """``(tail, end)`` of a compact frame holding a JOB header as palm encodes it:
    the header's bytes after the job id, and where the payload starts; else None.

    Two such headers with the same tail are the same header but for the job
    id, so a receiver can key what it worked out from one header (the
    function to run, its name) on the tail and skip decoding the next ones.
    """
    if len(frame) < _ID_AT + 1 or frame[0] != COMPACT_MARK:
        return None
    end = _HEAD_AT + ((frame[1] << 8) | frame[2])
    id_length = _ID_LENGTH[frame[_ID_AT]]
    if (
        end > len(frame)
        or not id_length
        or _ID_AT + id_length >= end
        or frame[_HEAD_AT:_ID_AT] != _JOB_HEAD_START
    ):
        return None
    return frame[_ID_AT + id_length : end], end


def compact_reply(frame: bytes, end: int, result: bytes) -> bytes:
    """The compact RESULT frame answering the compact JOB ``frame`` (its payload at
    ``end``, as :func:`job_tail` says) with ``result``: the request's header with
    its kind swapped (:func:`reply_head`), the same length."""
    return _MARK + frame[1:_HEAD_AT] + _RESULT_HEAD_START + frame[_ID_AT:end] + result


def job_head(job_id: int, tail: bytes) -> bytes:
    """The encoded JOB header with id ``job_id`` and the ``tail`` of another one
    (:func:`job_tail`: the same header but for the id)."""
    encoded: bytes = packb(job_id)
    return _JOB_HEAD_START + encoded + tail


def job_message(
    client: bytes,
    first_id: int,
    function: str,
    payloads: Sequence[bytes],
    *,
    extra: dict[str, Any] | None = None,
    request_ids: Sequence[str | None] | None = None,
    pipeline: bytes | None = None,
    stage: int = 0,
    key: str | None = None,
    pack: bool = True,
    largest: int | None = None,
) -> list[bytes]:
    """The frames of a JOB message for consecutive jobs ``first_id``, ``first_id + 1``...

    Several payloads all under :data:`PACK_BELOW_BYTES` travel packed in one
    frame unless ``pack`` is false. ``request_ids`` (one per payload, ``None``
    for none) are the HTTP request ids that reach the servers' logs; ``key``
    is the shared-cache key the jobs carry; ``largest``, the size of the
    largest payload when the caller knows it already.
    """
    if not payloads:
        raise ProtocolError("a JOB message carries at least one payload")
    if request_ids is not None and any(request_ids):
        if len(payloads) == 1:
            extra = dict(extra or {}, request_id=request_ids[0])
        else:
            extra = dict(extra or {}, request_ids=[rid or "" for rid in request_ids])
    header = Header(Kind.JOB, first_id, client, function, stage, pipeline, key, extra=extra)
    if largest is None and pack and len(payloads) > 1:
        largest = max(map(len, payloads))
    if pack and len(payloads) > 1 and largest is not None and largest <= PACK_BELOW_BYTES:
        header.packed = len(payloads)
    return [header.to_wire(), *frames_for(header, payloads)]


def control(kind: int, client: bytes = b"", id: int = 0, **extra: Any) -> list[bytes]:
    """A header-only message (HELLO, WELCOME, HEARTBEAT, BYE, READY, INFO, PING...)."""
    return [Header(kind, id, client, extra=extra or None).to_wire()]


def routed(frames: Sequence[bytes]) -> tuple[bytes, Header, list[bytes]]:
    """What a ROUTER socket received: the sender's identity, the header and the payloads.

    Raises :class:`~palm.errors.ProtocolError` when there is no message behind
    the identity or it does not parse.
    """
    if len(frames) < 2:
        raise ProtocolError("a routed message without a header")
    header, payloads = decode(frames[1:])
    return frames[0], header, payloads
