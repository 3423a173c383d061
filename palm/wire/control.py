"""Typed readers of the fields control messages carry in ``header.extra``.

A header that decodes (:func:`palm.wire.protocol.decode_header`) still holds
whatever its sender put in ``extra``: a READY's credit may be ``"x"``, a
WELCOME's worker count a map. Every field a receiver acts on is read here,
checked for its type and range, into a small frozen dataclass; anything off
is a :class:`~palm.errors.ProtocolError`, which the receiver counts as a
malformed message and drops. Missing fields take their defaults, unknown
ones are ignored.

* :class:`Ready` (worker -> master: credit, identity, functions);
* :class:`Credit` (worker -> master: more credit);
* :class:`Welcome` (master -> worker or client: session, reset, master name,
  worker count, heartbeat interval);
* :class:`Hello` (client or downstream stage -> outlet: the topic taken, a
  name, a probe flag);
* :class:`ResultMeta` (worker -> master: the worker id ``w`` and the
  ``route``/``of`` a master put on a job; a leaving worker's last BYE too).

:func:`announced_jobs` and :func:`unparsable` answer a JOB message whose
payloads cannot be read: one error per job its header announces.
"""

from __future__ import annotations

import math
import os
import socket
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Final

from palm.errors import ProtocolError
from palm.wire.messages import control
from palm.wire.protocol import ErrorInfo, Header, Kind

__all__ = [
    "MAX_CREDIT",
    "MAX_NAME",
    "Credit",
    "Hello",
    "Ready",
    "ResultMeta",
    "Welcome",
    "announced_jobs",
    "map_report",
    "unparsable",
]

#: Most credit a worker may announce at once.
MAX_CREDIT: Final = 1_000_000

#: Longest host, worker, master, session, topic or function name accepted.
MAX_NAME: Final = 1024

#: Longest name of a mapped function a worker reports for the counters.
MAX_MAP_NAME: Final = 100

#: Most functions a worker may declare.
MAX_FUNCTIONS: Final = 10_000

_MAX_PID: Final = 1 << 31
_MAX_INT: Final = 1 << 63


def _extra(header: Header) -> dict[Any, Any]:
    return header.extra or {}


def _int(extra: dict[Any, Any], key: str, default: int, low: int, high: int) -> int:
    value = extra.get(key, default)
    if type(value) is not int:
        raise ProtocolError(f"{key!r} is a {type(value).__name__}, not an integer")
    if not low <= value <= high:
        raise ProtocolError(f"{key!r} is {value}, outside {low}..{high}")
    return value


def _str(extra: dict[Any, Any], key: str, default: str | None) -> str | None:
    value = extra.get(key, default)
    if value is None:
        return None
    if type(value) is not str:
        raise ProtocolError(f"{key!r} is a {type(value).__name__}, not a string")
    if len(value) > MAX_NAME:
        raise ProtocolError(f"{key!r} is longer than {MAX_NAME} characters")
    return value


def _flag(extra: dict[Any, Any], key: str) -> bool:
    value = extra.get(key, False)
    if value is None:
        return False
    if type(value) is not bool and type(value) is not int:
        raise ProtocolError(f"{key!r} is a {type(value).__name__}, not a flag")
    return bool(value)


def _kind(header: Header, *kinds: int) -> None:
    if header.kind not in kinds:
        names = "/".join(Kind.NAMES[k] for k in kinds)
        raise ProtocolError(f"a {Kind.NAMES.get(header.kind, header.kind)} is not a {names}")


@dataclass(frozen=True, slots=True)
class Ready:
    """A worker registering: its credit, pid, host, name and functions."""

    credit: int = 1
    pid: int = 0
    host: str = ""
    name: str = ""
    functions: frozenset[str] = frozenset()

    @classmethod
    def from_header(cls, header: Header) -> Ready:
        _kind(header, Kind.READY)
        extra = _extra(header)
        raw = extra.get("functions", [])
        if raw is None:
            raw = []
        if type(raw) is not list or len(raw) > MAX_FUNCTIONS:
            raise ProtocolError("'functions' is not a list of names")
        for f in raw:
            if type(f) is not str or len(f) > MAX_NAME:
                raise ProtocolError("'functions' holds something other than a name")
        return cls(
            _int(extra, "credit", 1, 0, MAX_CREDIT),
            _int(extra, "pid", 0, 0, _MAX_PID),
            _str(extra, "host", "") or "",
            _str(extra, "name", "") or "",
            frozenset(raw),
        )

    @classmethod
    def of_this_process(cls, credit: int, name: str, functions: Iterable[str]) -> Ready:
        """What a worker of this process registers with."""
        return cls(credit, os.getpid(), socket.gethostname(), name, frozenset(functions))

    def message(self) -> list[bytes]:
        """The READY message saying it."""
        return control(
            Kind.READY,
            credit=self.credit,
            pid=self.pid,
            host=self.host,
            name=self.name,
            functions=sorted(self.functions),
        )


@dataclass(frozen=True, slots=True)
class Credit:
    """More credit from a worker (a CREDIT), or none (a HEARTBEAT)."""

    credit: int = 0

    @classmethod
    def from_header(cls, header: Header) -> Credit:
        _kind(header, Kind.CREDIT, Kind.HEARTBEAT)
        if header.kind == Kind.HEARTBEAT:
            return cls(0)
        return cls(_int(_extra(header), "credit", 1, 0, MAX_CREDIT))


@dataclass(frozen=True, slots=True)
class Welcome:
    """A master's or stage's WELCOME: its session and what comes with it.

    ``workers`` and ``interval_s`` are None when the WELCOME does not say.
    """

    session: str | None = None
    reset: bool = False
    master: str | None = None
    workers: int | None = None
    interval_s: float | None = None

    @classmethod
    def from_header(cls, header: Header) -> Welcome:
        _kind(header, Kind.WELCOME)
        extra = _extra(header)
        workers = extra.get("workers")
        if workers is not None:
            workers = _int(extra, "workers", 0, 0, _MAX_INT)
        interval = extra.get("interval_s")
        if interval is not None:
            if type(interval) not in (int, float) or not (
                math.isfinite(interval) and 0 < interval <= 86_400
            ):
                raise ProtocolError("'interval_s' is not a positive number of seconds")
            interval = float(interval)
        return cls(
            _str(extra, "session", None),
            _flag(extra, "reset"),
            _str(extra, "master", None),
            workers,
            interval,
        )


@dataclass(frozen=True, slots=True)
class Hello:
    """A HELLO or HEARTBEAT to an outlet: the topic a downstream stage takes
    (``previous``), its ``name``, and whether it is a ``probe`` report."""

    previous: str | None = None
    name: str | None = None
    probe: bool = False

    @classmethod
    def from_header(cls, header: Header) -> Hello:
        _kind(header, Kind.HELLO, Kind.HEARTBEAT)
        extra = _extra(header)
        probe = extra.get("probe")
        # a probe report carries a map of details; anything truthy counts
        return cls(
            _str(extra, "previous", None),
            _str(extra, "name", None),
            probe is not None and probe is not False and probe != 0 and probe != "",
        )


@dataclass(slots=True)  # read once per result message: a frozen __init__ costs more
class ResultMeta:
    """What a master reads of a worker's RESULT or HEARTBEAT besides the header:
    the worker's id ``w``, and the ``route`` and original id ``of`` it put on
    the job itself."""

    worker: bytes | None = None
    route: str | None = None
    origin: int | None = None
    #: a map answer's user function (``mf``) and how many of its chunks failed (``mx``)
    map_function: str | None = None
    map_failed: int = 0
    #: whether the result returns its worker's credit (``nc``: a worker giving
    #: back credit it asked for on top of its own keeps this one)
    credit_back: bool = True

    @classmethod
    def from_header(cls, header: Header) -> ResultMeta:
        _kind(header, Kind.RESULT, Kind.HEARTBEAT, Kind.BYE)
        extra = _extra(header)
        worker = extra.get("w")
        if worker is not None and (type(worker) is not bytes or len(worker) > 256):
            raise ProtocolError("the worker id 'w' is not bytes")
        route = extra.get("route")
        if route is not None and type(route) is not str:
            raise ProtocolError("'route' is not a string")
        origin = extra.get("of")
        if origin is not None and type(origin) is not int:
            raise ProtocolError("'of' is not a job id")
        function = extra.get("mf")
        if function is not None and (type(function) is not str or len(function) > MAX_MAP_NAME):
            function = None  # only for the counters: a bad one is left out
        failed = extra.get("mx", 0)
        if type(failed) is not int or not 0 <= failed < _MAX_INT:
            failed = 0
        return cls(worker, route, origin, function or None, failed, extra.get("nc") is not True)


def map_report(extra: dict[str, Any] | None, function: str, failed: int) -> dict[str, Any]:
    """A map answer's ``extra`` with the user function's name and the failed chunks
    (what :class:`ResultMeta` reads back for the master's counters)."""
    found = dict(extra or {})
    if function:
        found["mf"] = function[:MAX_MAP_NAME]
    if failed:
        found["mx"] = failed
    return found


def announced_jobs(header: Header, payloads: Sequence[bytes]) -> int:
    """How many jobs a message says it carries, as far as that can be believed.

    A packed message says so in ``header.packed``; a packed job takes at least
    one byte of its frame, so a count above the frame's size (or a packed
    message with other than one frame) is not believed: 1, one answer for the
    whole message. Otherwise one job per payload frame (at least 1).
    """
    if header.packed:
        if len(payloads) == 1 and header.packed <= len(payloads[0]):
            return header.packed
        return 1
    return max(1, len(payloads))


def unparsable(
    header: Header,
    payloads: Sequence[bytes],
    reason: str,
    server: str,
    error_type: str = "palm.ProtocolError",
) -> tuple[Header, list[bytes]]:
    """The RESULT answering a JOB whose payloads cannot be read: an error of
    ``error_type`` for each job it announces (:func:`announced_jobs`)."""
    count = announced_jobs(header, payloads)
    reply = header.reply()
    reply.packed = count if header.packed and count > 1 else 0
    message = f"{server} could not read the job message: {reason}"
    reply.errors = [
        ErrorInfo(i, error_type, message, "", server, header.stage) for i in range(count)
    ]
    return reply, [b""] * count
