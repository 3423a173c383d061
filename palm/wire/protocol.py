"""palm's wire protocol.

A palm message is a ZeroMQ multipart message::

    [header, payload_0, payload_1, ..., payload_n-1]

The header is a small msgpack array (see :class:`Header`); every payload is
raw bytes in a frame of its own, so a master routes a message by reading the
header only and never decodes or copies a payload. A message may carry one
payload (a single job) or several (a batch of consecutive jobs ``id``,
``id + 1``, ... sharing one header), which is how palm moves many small jobs
at once.

Small payloads of a batch may instead travel packed together in one frame (a
msgpack array of byte strings; ``header.packed`` says how many), which spares
a ZeroMQ frame per job; the master still routes them without looking inside.
:func:`jobs_in` and :func:`frames_for` convert between the two forms.

Errors travel in the header: ``errors`` is a list of :class:`ErrorInfo`, each
naming the position of the job it belongs to; that job's payload is empty.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from operator import countOf
from typing import Any, Final

import msgpack

from palm.errors import PayloadTooLarge, ProtocolError, RemoteError, remote_error

__all__ = [
    "COMPACT_MARK",
    "DEFAULT_MAX_MESSAGE_BYTES",
    "VERSION",
    "ErrorInfo",
    "Header",
    "Kind",
    "MalformedCounter",
    "all_bytes",
    "check_size",
    "decode",
    "decode_header",
    "encode",
    "frames_for",
    "is_compact",
    "job_count",
    "jobs_in",
]

log = logging.getLogger(__name__)


def all_bytes(items: Sequence[object]) -> bool:
    """Whether every item is exactly ``bytes`` (not a subclass): one pass in C,
    counting types by identity (a set of the types hashes each one, twice as slow)."""
    return countOf(map(type, items), bytes) == len(items)


#: Protocol version carried in every header; a peer refuses other versions.
VERSION: Final = 1

#: Largest message (all frames together) accepted unless configured otherwise.
DEFAULT_MAX_MESSAGE_BYTES: Final = 64 * 1024 * 1024


class Kind:
    """Message kinds: the command byte of every header."""

    JOB: Final = 1  # client -> server/master -> worker: run `function` on each payload
    RESULT: Final = 2  # server/worker -> master -> client: one payload per job, errors inline
    READY: Final = 3  # worker -> master: "I am here", extra carries credit and identity
    HEARTBEAT: Final = 4  # both ways between master and workers / clients
    HELLO: Final = 5  # client -> master: announce a client id before sending jobs
    WELCOME: Final = 6  # master -> client/worker: session id and settings
    BYE: Final = 7  # worker/client -> master: leaving on purpose
    CACHE_SET: Final = 8  # client -> db endpoint: store payload 0 (key in header.key)
    CACHE_GET: Final = 9  # client -> db endpoint: fetch header.key
    CACHE_DELETE: Final = 10  # client -> db endpoint: delete header.key
    PING: Final = 11  # anyone -> server: liveness probe, answered by RESULT
    INFO: Final = 12  # anyone -> server: describe yourself (functions, addresses)
    CREDIT: Final = 13  # worker -> master: more credit without a result

    NAMES: Final = {
        1: "JOB",
        2: "RESULT",
        3: "READY",
        4: "HEARTBEAT",
        5: "HELLO",
        6: "WELCOME",
        7: "BYE",
        8: "CACHE_SET",
        9: "CACHE_GET",
        10: "CACHE_DELETE",
        11: "PING",
        12: "INFO",
        13: "CREDIT",
    }


@dataclass(slots=True)
class ErrorInfo:
    """An error for the payload at ``offset``, as it travels in a header."""

    offset: int
    type: str
    message: str
    traceback: str = ""
    server: str = ""
    stage: int = 0

    def to_wire(self) -> list[Any]:
        return [self.offset, self.type, self.message, self.traceback, self.server, self.stage]

    @classmethod
    def from_wire(cls, raw: Any) -> ErrorInfo:
        if not isinstance(raw, list) or len(raw) != 6:
            raise ProtocolError("error entry is not a 6-item array")
        offset, type_, message, tb, server, stage = raw
        if not (
            isinstance(offset, int)
            and isinstance(type_, str)
            and isinstance(message, str)
            and isinstance(tb, str)
            and isinstance(server, str)
            and isinstance(stage, int)
        ):
            raise ProtocolError("error entry has fields of the wrong type")
        return cls(offset, type_, message, tb, server, stage)

    def to_exception(self, function: str = "", index: int | None = None) -> RemoteError:
        return remote_error(
            self.type,
            self.message,
            self.traceback,
            server=self.server,
            function=function,
            stage=self.stage,
            index=index,
        )


@dataclass(slots=True)
class Header:
    """The msgpack header of a palm message.

    ``id`` is the id of the first job in the message (a batch of n payloads
    covers ids ``id`` .. ``id + n - 1``); ``client`` names the client the
    results belong to; ``function`` is ``'server.function'`` or a bare
    function name; ``stage`` counts the servers a message went through;
    ``pipeline`` groups messages of one pipeline run; ``key`` is a cache key;
    ``errors`` carries per-payload errors; ``extra`` holds rarely used fields
    (request id, attempt count, worker identity, credit).
    """

    kind: int
    id: int = 0
    client: bytes = b""
    function: str = ""
    stage: int = 0
    pipeline: bytes | None = None
    key: str | None = None
    errors: list[ErrorInfo] | None = None
    extra: dict[str, Any] | None = field(default=None)
    version: int = VERSION
    packed: int = 0  # jobs packed in the single payload frame; 0: one frame per job

    def to_wire(self) -> bytes:
        errors = None if self.errors is None else [e.to_wire() for e in self.errors]
        data: bytes = msgpack.packb(
            [
                self.version,
                self.kind,
                self.id,
                self.client,
                self.function,
                self.stage,
                self.pipeline,
                self.key,
                errors,
                self.extra,
                self.packed,
            ],
            use_bin_type=True,
        )
        return data

    def reply(self, kind: int = Kind.RESULT) -> Header:
        """A header answering this one: same ids, client, function, stage and pipeline."""
        return Header(
            kind,
            self.id,
            self.client,
            self.function,
            self.stage,
            self.pipeline,
            self.key,
            None,
            self.extra,
            packed=self.packed,
        )


_HEADER_FIELDS: Final = 11


def decode_header(frame: bytes | memoryview) -> Header:
    """Parse a header frame; raise :class:`ProtocolError` for anything else."""
    try:
        raw = msgpack.unpackb(frame, raw=False, strict_map_key=False)
    except Exception as exc:  # msgpack raises many types for garbage; all mean the same
        raise ProtocolError(f"header is not msgpack: {exc.__class__.__name__}") from exc
    if type(raw) is not list or len(raw) != _HEADER_FIELDS:
        raise ProtocolError("header is not an 11-item array")
    version, kind, id_, client, function, stage, pipeline, key, errors, extra, packed = raw
    # the common case in one test; anything off goes through the checks below,
    # which say what is wrong
    if (
        version == VERSION
        and type(kind) is int
        and kind in Kind.NAMES
        and type(id_) is int
        and type(client) is bytes
        and type(function) is str
        and type(stage) is int
        and (pipeline is None or type(pipeline) is bytes)
        and (key is None or type(key) is str)
        and errors is None
        and (extra is None or type(extra) is dict)
        and type(packed) is int
        and packed >= 0
    ):
        return Header(
            kind, id_, client, function, stage, pipeline, key, None, extra, version, packed
        )
    if version != VERSION:
        raise ProtocolError(f"protocol version {version!r} is not {VERSION}")
    if not isinstance(kind, int) or kind not in Kind.NAMES:
        raise ProtocolError(f"unknown message kind {kind!r}")
    if not isinstance(id_, int) or isinstance(id_, bool):
        raise ProtocolError("message id is not an integer")
    if not isinstance(client, bytes):
        raise ProtocolError("client id is not bytes")
    if not isinstance(function, str):
        raise ProtocolError("function is not a string")
    if not isinstance(stage, int) or isinstance(stage, bool):
        raise ProtocolError("stage is not an integer")
    if pipeline is not None and not isinstance(pipeline, bytes):
        raise ProtocolError("pipeline id is not bytes")
    if key is not None and not isinstance(key, str):
        raise ProtocolError("cache key is not a string")
    if extra is not None and not isinstance(extra, dict):
        raise ProtocolError("extra is not a map")
    if not isinstance(packed, int) or isinstance(packed, bool) or packed < 0:
        raise ProtocolError("packed is not a count")
    infos: list[ErrorInfo] | None = None
    if errors is not None:
        if not isinstance(errors, list):
            raise ProtocolError("errors is not an array")
        infos = [ErrorInfo.from_wire(e) for e in errors]
    return Header(kind, id_, client, function, stage, pipeline, key, infos, extra, version, packed)


def encode(header: Header, payloads: Sequence[bytes] = ()) -> list[bytes]:
    """The frames of a message: the encoded header, then each payload as it is."""
    return [header.to_wire(), *payloads]


#: First byte of a compact frame; msgpack never begins anything with it
#: (:mod:`palm.wire.messages` builds them).
COMPACT_MARK: Final = 0xC1


def is_compact(frames: Sequence[bytes]) -> bool:
    return len(frames) == 1 and len(frames[0]) >= 3 and frames[0][0] == COMPACT_MARK


def decode(frames: Sequence[bytes]) -> tuple[Header, list[bytes]]:
    """Split a received message (either form) into its header and payload frames."""
    if not frames:
        raise ProtocolError("empty message")
    if is_compact(frames):
        frame = frames[0]
        end = 3 + int.from_bytes(frame[1:3], "big")
        if end > len(frame):
            raise ProtocolError("compact frame shorter than its header")
        header = decode_header(frame[3:end])
        if header.packed:
            raise ProtocolError("a compact frame carries one payload")
        payloads = [bytes(frame[end:])] if header.kind in (Kind.JOB, Kind.RESULT) else []
    else:
        header = decode_header(frames[0])
        payloads = list(frames[1:])
    if header.kind in (Kind.JOB, Kind.RESULT) and not payloads:
        raise ProtocolError(f"{Kind.NAMES[header.kind]} message without payload")
    if header.packed and len(payloads) != 1:
        raise ProtocolError("a packed message has exactly one payload frame")
    count = header.packed or len(payloads)
    if header.errors:
        for info in header.errors:
            if not 0 <= info.offset < max(count, 1):
                raise ProtocolError("error offset outside the payloads")
    for payload in payloads:
        if type(payload) is not bytes and not isinstance(payload, bytes | memoryview):
            raise ProtocolError("payload frame is not bytes")
    return header, payloads


def jobs_in(header: Header, payloads: Sequence[bytes]) -> list[bytes]:
    """The payload of each job of a message, unpacking a packed one."""
    if not header.packed:
        return list(payloads)
    try:
        items = msgpack.unpackb(payloads[0], raw=False)
    except Exception as exc:
        raise ProtocolError(f"packed payloads are not msgpack: {exc.__class__.__name__}") from exc
    if type(items) is not list or len(items) != header.packed:
        raise ProtocolError("packed payloads do not match their count")
    if not all_bytes(items):
        raise ProtocolError("a packed payload is not bytes")
    return items


def frames_for(header: Header, payloads: Sequence[bytes]) -> list[bytes]:
    """The payload frames for ``payloads`` in the form ``header`` says (packed or not)."""
    if not header.packed:
        return list(payloads)
    packed: bytes = msgpack.packb(list(payloads), use_bin_type=True)
    return [packed]


def request_id_of(extra: dict[str, Any] | None, offset: int) -> str | None:
    """The HTTP request id of the job at ``offset`` of a message, if it has one.

    A message of one job carries ``request_id``; jobs of several requests
    sent together carry ``request_ids``, one per job ("" for none).
    """
    if not extra:
        return None
    ids = extra.get("request_ids")
    if isinstance(ids, list):
        value = ids[offset] if offset < len(ids) else None
    else:
        value = extra.get("request_id")
    return value if isinstance(value, str) and value else None


def job_count(header: Header, frames: int) -> int:
    """How many jobs a message of ``frames`` payload frames carries."""
    return header.packed or frames


def check_size(frames: Sequence[bytes], limit: int) -> None:
    """Raise :class:`PayloadTooLarge` when the frames add up to more than ``limit``."""
    size = 0
    for frame in frames:
        size += len(frame)
    if size > limit:
        raise PayloadTooLarge(size, limit)


class MalformedCounter:
    """Counts malformed messages and logs them once per burst.

    The first bad message of a burst is logged with its reason; later ones
    are only counted until ``burst_s`` seconds pass, when the count of what
    was dropped meanwhile is logged with the next one.
    """

    def __init__(self, owner: str, logger: logging.Logger | None = None, burst_s: float = 5.0):
        self.owner = owner
        self.total = 0
        self._logger = logger or log
        self._burst_s = burst_s
        self._last_log = 0.0
        self._since_log = 0

    def record(self, reason: str) -> None:
        self.total += 1
        self._since_log += 1
        now = time.monotonic()
        if now - self._last_log >= self._burst_s:
            self._logger.warning(
                "%s dropped %d malformed message(s) (%d in all); latest: %s",
                self.owner,
                self._since_log,
                self.total,
                reason,
            )
            self._last_log = now
            self._since_log = 0
