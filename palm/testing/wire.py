"""Clients at the level of the wire: palm messages sent and received as they are.

:class:`WireClient` talks to a master the way a
:class:`~palm.call.parallel.ParallelClient` does, but sends exactly the
messages the test asks for and hands back every result message the master
sends, duplicates included, so a test can check what the master itself does.
:class:`RawPeer` is one DEALER socket to a standalone server, for frames of
any shape, malformed ones included.
"""

from __future__ import annotations

import itertools
import time
import uuid
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import zmq

from palm.errors import RemoteError
from palm.wire.protocol import Header, Kind, decode, frames_for, jobs_in
from palm.wire.sockets import make_socket

__all__ = ["RawPeer", "WireClient", "WireResult", "answers"]


@dataclass(slots=True)
class WireResult:
    """One RESULT message as it arrived: its header and the payload of each job."""

    header: Header
    payloads: list[bytes]

    @property
    def ids(self) -> range:
        """The ids of the jobs this message answers."""
        return range(self.header.id, self.header.id + len(self.payloads))

    def outcomes(self) -> dict[int, bytes | RemoteError]:
        """Each job id with its result bytes, or the error it came back with."""
        errors = {e.offset: e for e in self.header.errors or ()}
        out: dict[int, bytes | RemoteError] = {}
        for offset, payload in enumerate(self.payloads):
            info = errors.get(offset)
            out[self.header.id + offset] = (
                payload if info is None else info.to_exception(self.header.function)
            )
        return out


def answers(results: Sequence[WireResult]) -> dict[int, bytes | RemoteError]:
    """The outcome of every job id in ``results``; AssertionError if one came twice."""
    out: dict[int, bytes | RemoteError] = {}
    for result in results:
        for job_id, outcome in result.outcomes().items():
            if job_id in out:
                raise AssertionError(f"job {job_id} was answered more than once")
            out[job_id] = outcome
    return out


class WireClient:
    """A client of a master that sends and receives raw palm messages.

    ``push_address``/``pull_address`` are named as for
    :class:`~palm.call.parallel.ParallelClient`: the master pushes results to
    the first and pulls jobs from the second. The client says HELLO when it
    is made (so the master knows it before any result is due). Not thread-safe.
    """

    def __init__(
        self,
        push_address: str,
        pull_address: str,
        server_name: str,
        *,
        client_id: bytes | None = None,
        timeout_s: float = 2.0,
        hello: bool = True,
    ) -> None:
        self.server_name = server_name
        self.client_id = client_id or uuid.uuid4().bytes
        self.timeout_s = timeout_s
        self.session: str | None = None
        self._ids = itertools.count(1)
        self._inbox: deque[WireResult] = deque()
        self._jobs = make_socket(zmq.PUSH)
        self._jobs.connect(pull_address)
        self._dealer = make_socket(zmq.DEALER, identity=self.client_id)
        self._dealer.connect(push_address)
        if hello:
            self.hello()

    @property
    def closed(self) -> bool:
        return bool(self._jobs.closed and self._dealer.closed)

    def close(self) -> None:
        self._jobs.close(0)
        self._dealer.close(0)

    def __enter__(self) -> WireClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # sending -----------------------------------------------------------------

    def send(
        self,
        function: str,
        payloads: Sequence[bytes],
        *,
        packed: bool = False,
        extra: dict[str, Any] | None = None,
    ) -> list[int]:
        """Send one JOB message carrying ``payloads``; the job ids it uses.

        ``function`` without a dot is qualified with the master's name;
        ``packed=True`` sends the payloads packed in one frame.
        """
        if not payloads:
            raise ValueError("a job message needs at least one payload")
        first = next(self._ids)
        for _ in range(len(payloads) - 1):
            next(self._ids)
        if "." not in function:
            function = f"{self.server_name}.{function}"
        header = Header(Kind.JOB, first, self.client_id, function, extra=extra)
        if packed:
            header.packed = len(payloads)
        self._jobs.send_multipart([header.to_wire(), *frames_for(header, list(payloads))])
        return list(range(first, first + len(payloads)))

    def send_frames(self, frames: Sequence[bytes]) -> None:
        """Send ``frames`` as they are on the job socket (malformed ones too)."""
        self._jobs.send_multipart(list(frames))

    # receiving ---------------------------------------------------------------

    def _read(self, timeout_s: float) -> Header | None:
        """Take one message from the master: a result goes to the inbox, a control
        message is returned; None when nothing came within ``timeout_s``."""
        if not self._dealer.poll(max(0, int(timeout_s * 1000)), zmq.POLLIN):
            return None
        header, payloads = decode(self._dealer.recv_multipart())
        if header.kind == Kind.RESULT:
            self._inbox.append(WireResult(header, jobs_in(header, payloads)))
        elif header.kind == Kind.WELCOME:
            session = (header.extra or {}).get("session")
            self.session = session if isinstance(session, str) else None
        return header

    def hello(self, timeout_s: float | None = None) -> dict[str, Any]:
        """Say HELLO and wait for the WELCOME; what it carries (session, workers...).

        Results that arrive meanwhile are kept for :meth:`results`. The master
        answers on the socket it sends results on, so every result it sent
        before the WELCOME has arrived by then.
        """
        self._dealer.send_multipart([Header(Kind.HELLO, 0, self.client_id).to_wire()])
        deadline = time.monotonic() + (self.timeout_s if timeout_s is None else timeout_s)
        while True:
            header = self._read(max(0.0, deadline - time.monotonic()))
            if header is not None and header.kind == Kind.WELCOME:
                return dict(header.extra or {})
            if header is None and time.monotonic() >= deadline:
                raise AssertionError(f"no WELCOME from master {self.server_name!r}")

    def results(self, jobs: int, timeout_s: float | None = None) -> list[WireResult]:
        """Result messages until they answer ``jobs`` jobs in all (duplicates count)."""
        deadline = time.monotonic() + (self.timeout_s if timeout_s is None else timeout_s)
        out: list[WireResult] = []
        got = 0
        while got < jobs:
            if self._inbox:
                result = self._inbox.popleft()
                out.append(result)
                got += len(result.payloads)
                continue
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"{got} of {jobs} job results arrived: {out}")
            self._read(left)
        return out

    def sync(self, timeout_s: float | None = None) -> list[WireResult]:
        """Every result the master has sent so far and the test has not taken.

        A HELLO/WELCOME round trip is the barrier: what the master sent this
        client before answering the HELLO arrives before the WELCOME.
        """
        self.hello(timeout_s)
        out = list(self._inbox)
        self._inbox.clear()
        return out


class RawPeer:
    """One DEALER socket to a standalone server: frames in, frames out. Not thread-safe."""

    def __init__(self, address: str, *, timeout_s: float = 2.0) -> None:
        self.timeout_s = timeout_s
        self._socket = make_socket(zmq.DEALER, identity=uuid.uuid4().bytes)
        self._socket.connect(address)
        self._ids = itertools.count(1)

    @property
    def closed(self) -> bool:
        return bool(self._socket.closed)

    def close(self) -> None:
        self._socket.close(0)

    def __enter__(self) -> RawPeer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def send(self, frames: Sequence[bytes]) -> None:
        """Send ``frames`` as they are."""
        self._socket.send_multipart(list(frames))

    def recv(self, timeout_s: float | None = None) -> list[bytes]:
        """The next message; AssertionError when none comes within the timeout."""
        wait = self.timeout_s if timeout_s is None else timeout_s
        if not self._socket.poll(max(0, int(wait * 1000)), zmq.POLLIN):
            raise AssertionError(f"no message within {wait} s")
        return self._socket.recv_multipart()

    def request(
        self, header: Header, payloads: Sequence[bytes] = (), timeout_s: float | None = None
    ) -> WireResult:
        """Send ``header`` (its id set to a fresh one) with ``payloads``; the reply to it."""
        header.id = next(self._ids)
        self.send([header.to_wire(), *frames_for(header, list(payloads))])
        deadline = time.monotonic() + (self.timeout_s if timeout_s is None else timeout_s)
        while True:
            reply, frames = decode(self.recv(max(0.0, deadline - time.monotonic())))
            if reply.id == header.id:
                return WireResult(reply, jobs_in(reply, frames))
