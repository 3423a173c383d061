"""One parallel client shared by many threads: calls made at the same time travel together.

A threaded program (an HTTP gateway, a web app) that runs one job per request
could give each thread a :class:`~palm.call.parallel.ParallelClient` of its own;
every job is then a message of its own at every hop. :class:`SharedClient`
lets all the threads of a process use one set of sockets instead::

    client = SharedClient(push_address, pull_address, db_address, 'server')
    result = client.eval('foo', b'a message')   # from any thread

Each call queues its job. One waiting caller at a time leads: it sends what is
queued (one message per function, consecutive job ids, packed), receives the
results for everybody and wakes each caller when its own is in. When the
leader's result arrives it hands the role to a caller still waiting. A call
made alone costs what ``ParallelClient.eval`` costs; calls that arrive while
others wait share their messages, and so the master's and the workers' work
per message.

A restarted master (a new session in its WELCOME) gets every job still
outstanding again; a result for a call that gave up is dropped.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Iterable, MutableMapping
from typing import Any, Protocol, TypeVar

import zmq

from palm.call.base import DEFAULT, DEFAULT_TIMEOUT_S, ClientState, PairClient, Timeout
from palm.errors import ClientClosed, ProtocolError, TimeoutError
from palm.wire.messages import job_message
from palm.wire.protocol import DEFAULT_MAX_MESSAGE_BYTES, ErrorInfo, Header, Kind, decode, jobs_in
from palm.wire.security import KeysOption
from palm.wire.sockets import send_frames

__all__ = ["OneJobCalls", "SharedClient", "job_messages"]


class Job(Protocol):
    """What a message needs of one call: its function, payload, request id and job id."""

    function: str
    payload: bytes
    request_id: str | None
    job_id: int


_J = TypeVar("_J", bound=Job)


def job_messages(
    client_id: bytes,
    calls: Iterable[Job],
    *,
    max_batch: int,
    limit: int,
    pack: bool = True,
) -> list[list[bytes]]:
    """JOB messages for ``calls`` (ids already given).

    Consecutive calls of one function with consecutive ids travel in one
    message, up to ``max_batch`` jobs and ``limit`` payload bytes; with
    ``pack=False`` every call is a message of its own.
    """
    out: list[list[bytes]] = []
    run: list[Job] = []
    size = 0
    for call in calls:
        if run and (
            not pack
            or call.function != run[0].function
            or call.job_id != run[-1].job_id + 1
            or len(run) >= max_batch
            or size + len(call.payload) > limit
        ):
            out.append(_message(client_id, run))
            run, size = [], 0
        run.append(call)
        size += len(call.payload)
    if run:
        out.append(_message(client_id, run))
    return out


def _message(client_id: bytes, run: list[Job]) -> list[bytes]:
    return job_message(
        client_id,
        run[0].job_id,
        run[0].function,
        [call.payload for call in run],
        request_ids=[call.request_id for call in run],
    )


class _Call:
    """One caller's job, and how it ended."""

    __slots__ = (
        "done", "error", "event", "function", "job_id", "lead", "payload", "request_id", "result",
    )  # fmt: skip

    def __init__(self, function: str, payload: bytes, request_id: str | None) -> None:
        self.function = function
        self.payload = payload
        self.request_id = request_id
        self.job_id = 0
        self.done = False
        self.lead = False
        self.result = b""
        self.error: BaseException | None = None
        self.event = threading.Event()


class OneJobCalls(PairClient):
    """What the combining clients share: checks, job ids, messages, results, restarts.

    :class:`SharedClient` (threads) and
    :class:`~palm.call.aio.AsyncSharedClient` (coroutines) differ only in
    how callers wait and who receives.
    """

    def __init__(
        self,
        push_address: str,
        pull_address: str,
        db_address: str | None,
        server_name: str,
        *,
        timeout_s: float | None = DEFAULT_TIMEOUT_S,
        max_batch: int = 64,
        max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES,
        heartbeat_interval_s: float = 1.0,
        keys: KeysOption = None,
    ) -> None:
        super().__init__(
            push_address,
            pull_address,
            db_address,
            server_name,
            timeout_s=timeout_s,
            max_message_bytes=max_message_bytes,
            heartbeat_interval_s=heartbeat_interval_s,
            keys=keys,
            needs="server_name must name the master",
        )
        self.max_batch = max(1, max_batch)
        #: messages sent and jobs they carried (how much calls were combined)
        self.messages_sent = 0
        self.jobs_sent = 0

    @property
    def client(self) -> OneJobCalls:
        """The client whose sockets and session the calls use: this one (the name
        stays for code written when it was a separate object)."""
        return self

    def _timeout(self, function: str, waited_s: float) -> TimeoutError:
        if not self.session.welcomed:
            return self.unwelcomed(function, waited_s)
        return TimeoutError(
            f"no result from master {self.server_name!r} at "
            f"{self.push_address} for {waited_s:.1f} s; 1 job of {function} outstanding"
        )

    def _number(self, calls: list[_J], outstanding: MutableMapping[int, _J]) -> None:
        """Give ``calls`` their job ids and count them outstanding."""
        for job_id, call in enumerate(calls, self.ids.take(len(calls))):
            call.job_id = job_id
            outstanding[job_id] = call

    def _messages(self, calls: Iterable[Job], pack: bool = True) -> list[list[bytes]]:
        """JOB messages for ``calls`` (ids given); ``pack=False``: one message each."""
        calls = list(calls)
        out = job_messages(
            self.client_id,
            calls,
            max_batch=self.max_batch,
            limit=self.max_message_bytes // 4,
            pack=pack,
        )
        self.messages_sent += len(out)
        self.jobs_sent += len(calls)
        return out

    def _resend(self, lost: Iterable[Job]) -> list[list[bytes]]:
        """Messages for jobs to send (again), one each, in id order: those a restarted
        master lost, or those that waited for the first WELCOME."""
        return self._messages(sorted(lost, key=lambda call: call.job_id), pack=False)

    def _read(self, frames: list[bytes]) -> tuple[list[tuple[int, bytes, ErrorInfo | None]], bool]:
        """The (job id, payload, error) of each job a message answers for this client,
        and whether every outstanding job is to be sent now: the message is the first
        WELCOME (no job left before it, see :mod:`palm.wire.session`) or the WELCOME of
        a restarted master (which lost what it held)."""
        try:
            header, rest = decode(frames)
        except ProtocolError:
            return [], False
        if header.kind == Kind.RESULT:
            return self._results(header, rest), False
        first = not self.session.welcomed
        return [], self.session.read(header) or (first and self.session.welcomed)

    def _results(
        self, header: Header, rest: list[bytes]
    ) -> list[tuple[int, bytes, ErrorInfo | None]]:
        if header.client != self.client_id:
            return []
        try:
            payloads = jobs_in(header, rest)
        except ProtocolError:
            return []
        errors = {info.offset: info for info in header.errors or ()}
        return [
            (header.id + offset, payload, errors.get(offset))
            for offset, payload in enumerate(payloads)
        ]


class SharedClient(OneJobCalls):
    """A thread-safe client of a parallel master for one job per call.

    ``max_batch`` caps the jobs that travel in one message; ``timeout_s``,
    ``heartbeat_interval_s`` and ``max_message_bytes`` are as for a
    :class:`~palm.call.parallel.ParallelClient`.
    """

    def __init__(
        self,
        push_address: str,
        pull_address: str,
        db_address: str | None,
        server_name: str,
        **options: Any,
    ) -> None:
        super().__init__(push_address, pull_address, db_address, server_name, **options)
        self._lock = threading.Lock()
        self._queued: deque[_Call] = deque()
        self._outstanding: dict[int, _Call] = {}
        self._leading = False

    def eval(
        self,
        function: str,
        payload: bytes,
        *,
        request_id: str | None = None,
        timeout_s: Timeout = DEFAULT,
    ) -> bytes:
        """Run ``function`` on one payload and return its result; any thread may call.

        ``request_id`` goes with the job into the workers' logs. A failed job
        raises its :class:`~palm.errors.RemoteError`.
        """
        payload = self.payload(payload)
        timeout = self.resolve_timeout(timeout_s)
        started = time.monotonic()
        deadline = None if timeout is None else started + timeout
        call = _Call(self.qualify(function), payload, request_id)
        with self._lock:
            self.ensure_open()
            self._queued.append(call)
            if not self._leading:
                self._leading = call.lead = True
        while True:
            if call.lead:
                self._lead(call, deadline)
            else:
                call.event.wait(None if deadline is None else max(0.0, deadline - time.monotonic()))
            with self._lock:
                call.event.clear()
                if call.done:
                    break
                if call.lead:
                    continue  # handed the role: lead now
                if deadline is not None and time.monotonic() >= deadline:
                    self._forget(call)
                    raise self._timeout(call.function, time.monotonic() - started)
        if call.error is not None:
            raise call.error
        return call.result

    # the leader ------------------------------------------------------------------

    def _lead(self, me: _Call, deadline: float | None) -> None:
        """Send and receive for everybody until ``me`` is done (or out of time)."""
        try:
            push, dealer = self.sockets()
            session = self.session
            hello_every = session.heartbeat_interval_s
            while True:
                with self._lock:
                    if me.done:
                        return
                    batch = list(self._queued)
                    self._queued.clear()
                    self._number(batch, self._outstanding)
                now = time.monotonic()
                if session.hello_due(now):
                    dealer.send_multipart(session.hello(now))
                if session.welcomed:  # else all go at the first WELCOME (see _read)
                    for message in self._messages(batch):
                        send_frames(push, message)  # large payloads lent, not copied
                if deadline is not None and now >= deadline:
                    return
                remaining = hello_every if deadline is None else min(hello_every, deadline - now)
                if remaining >= hello_every:
                    try:  # a blocking receive, at most a heartbeat interval (RCVTIMEO)
                        frames = dealer.recv_multipart()
                    except zmq.Again:
                        continue
                elif dealer.poll(max(1, int(remaining * 1000)), zmq.POLLIN):
                    frames = dealer.recv_multipart()
                else:
                    continue
                self._take(frames, push)
        finally:
            self._hand_over(me)

    def _take(self, frames: list[bytes], push: zmq.Socket[bytes]) -> None:
        """A message on the result socket: results to hand out, or a WELCOME."""
        results, send_all = self._read(frames)
        if send_all:
            with self._lock:  # the first WELCOME, or a restarted master that lost them
                lost = list(self._outstanding.values())
            for message in self._resend(lost):
                send_frames(push, message)
            return
        finished: list[_Call] = []
        with self._lock:
            for job_id, payload, error in results:
                call = self._outstanding.pop(job_id, None)
                if call is None:
                    continue  # the answer to a call that gave up
                if error is None:
                    call.result = payload
                else:
                    call.error = error.to_exception(call.function)
                call.done = True
                finished.append(call)
        for call in finished:
            call.event.set()

    def _hand_over(self, me: _Call) -> None:
        """Pass the role to a caller still waiting, or leave it free."""
        with self._lock:
            me.lead = False
            if self.closed:  # close() left the sockets to the last leader
                self._leading = False
                self._release()
                return
            waiting = (c for c in (*self._outstanding.values(), *self._queued) if c is not me)
            successor = next(waiting, None)
            if successor is None:
                self._leading = False
                return
            successor.lead = True
        successor.event.set()

    def _forget(self, call: _Call) -> None:
        """Drop a call that gave up (the lock is held)."""
        self._outstanding.pop(call.job_id, None)
        try:
            self._queued.remove(call)
        except ValueError:
            pass

    def close(self) -> None:
        """Close the client: calls still waiting fail with
        :class:`~palm.errors.ClientClosed` (a ``RuntimeError``), later ones too.

        Any thread may call it, also while others wait in :meth:`eval`. The
        sockets close at once, or, when a caller is receiving on them, as soon
        as its receive returns (within a heartbeat interval).
        """
        with self._lock:
            if self.closed:
                return
            self.state = ClientState.CLOSED
            waiting = [*self._outstanding.values(), *self._queued]
            self._outstanding.clear()
            self._queued.clear()
            for call in waiting:
                call.error = ClientClosed("the client was closed")
                call.done = True
            receiving = self._leading
        for call in waiting:
            call.event.set()
        if not receiving:
            self._release()
