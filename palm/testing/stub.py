"""A scripted worker: the test decides what it does with every job it gets.

A :class:`StubWorker` speaks the worker side of the master protocol with no
code of its own: it registers (READY with a credit and its functions),
heartbeats from a thread of its own while it is alive, and keeps the jobs
the master hands it until the test answers them, answers them twice,
answers them late, fails them, lets the worker die (it stops heartbeating)
or leaves (BYE).
"""

from __future__ import annotations

import time
import uuid
from collections import deque
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field

import zmq

from palm.serve.worker import HeartbeatThread
from palm.wire.control import Ready
from palm.wire.messages import control
from palm.wire.protocol import ErrorInfo, Header, Kind, decode, frames_for, jobs_in
from palm.wire.sockets import make_socket

__all__ = ["StubJob", "StubWorker"]


@dataclass(slots=True)
class StubJob:
    """A JOB message as the stub got it: header, the payload of each job, raw frames."""

    header: Header
    payloads: list[bytes]
    frames: list[bytes] = field(repr=False)

    @property
    def function(self) -> str:
        """The bare function name (``'foo'`` for ``'master.foo'``)."""
        return self.header.function.rpartition(".")[2]

    @property
    def ids(self) -> range:
        """The ids of the jobs of this message."""
        return range(self.header.id, self.header.id + len(self.payloads))


class StubWorker:
    """A worker the test drives by hand.

    ``push_address``/``pull_address`` are named as for
    :class:`~palm.serve.worker.Worker`: the master's ``worker_push_address``
    (jobs, credit, heartbeats) and ``worker_pull_address`` (results). Built
    with ``register=True`` it registers at once and waits for the master's
    WELCOME. The stub is driven from one thread (the test's); only its
    heartbeats run in a thread of their own.
    """

    def __init__(
        self,
        push_address: str,
        pull_address: str,
        *,
        name: str = "stub",
        functions: Iterable[str] = (),
        credit: int = 1,
        heartbeat_interval_s: float = 0.05,
        timeout_s: float = 2.0,
        register: bool = True,
    ) -> None:
        self.name = name
        self.functions = sorted(functions)
        self.credit = credit
        self.heartbeat_interval_s = heartbeat_interval_s
        self.timeout_s = timeout_s
        self.identity = uuid.uuid4().bytes
        #: Every job message received, in order (answered or not).
        self.received: list[StubJob] = []
        #: WELCOME headers received (``extra['reset']`` asks to register again).
        self.welcomes: list[Header] = []
        #: Heartbeats received from the master.
        self.master_heartbeats = 0
        #: BYEs received from the master (its answer to :meth:`ask_to_leave`).
        self.goodbyes = 0
        self._jobs: deque[StubJob] = deque()
        self._pull_address = pull_address
        self._dealer = make_socket(zmq.DEALER, identity=self.identity)
        self._dealer.connect(push_address)
        self._results = make_socket(zmq.PUSH)
        self._results.connect(pull_address)
        self._beats: HeartbeatThread | None = None
        if register:
            self.register()

    # lifecycle ---------------------------------------------------------------

    @property
    def alive(self) -> bool:
        """True while the stub heartbeats."""
        return self._beats is not None

    @property
    def closed(self) -> bool:
        return bool(self._dealer.closed and self._results.closed)

    def register(self, *, wait: bool = True) -> Header | None:
        """Send READY (credit, functions, name) and start heartbeating.

        With ``wait`` the master's WELCOME is awaited and returned.
        """
        seen = len(self.welcomes)
        ready = Ready.of_this_process(self.credit, self.name, self.functions)
        self._dealer.send_multipart(ready.message())
        self._start_heartbeats()
        if not wait:
            return None
        self._read_until(lambda: len(self.welcomes) > seen, "a WELCOME")
        return self.welcomes[-1]

    def die(self) -> None:
        """Fall silent, as a worker whose process hung or was killed: no more heartbeats.

        The stub sends nothing on its own from now on; the test may still make
        it answer (a late result) or register again.
        """
        if self._beats is not None:
            self._beats.stop()
            self._beats = None

    def leave(self) -> None:
        """Say BYE to the master, as a worker that stops on purpose, and fall silent."""
        self._dealer.send_multipart([Header(Kind.BYE, 0).to_wire()])
        self.die()

    def ask_to_leave(self, *, wait: bool = True) -> None:
        """Ask to leave gracefully (a BYE with ``leave``); with ``wait``, read until
        the master's BYE comes back (the jobs sent before it are then pending)."""
        seen = self.goodbyes
        self._dealer.send_multipart(control(Kind.BYE, leave=True))
        if wait:
            self._read_until(lambda: self.goodbyes > seen, "BYE")

    def say_goodbye(self) -> None:
        """The last word of a leaving worker: a BYE on the result socket, then silence."""
        self._results.send_multipart([Header(Kind.BYE, 0, extra={"w": self.identity}).to_wire()])
        self.die()

    def close(self) -> None:
        """Stop heartbeating and close the sockets (sending nothing)."""
        self.die()
        self._dealer.close(0)
        self._results.close(0)

    def __enter__(self) -> StubWorker:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _start_heartbeats(self) -> None:
        if self._beats is None:
            self._beats = HeartbeatThread(
                self._pull_address,
                self.identity,
                self.heartbeat_interval_s,
                name=f"palm-testing-stub-{self.name}",
            )
            self._beats.start()

    # jobs --------------------------------------------------------------------

    def _read(self, timeout_s: float) -> bool:
        """Take one message from the master; False if none came within ``timeout_s``."""
        if not self._dealer.poll(max(0, int(timeout_s * 1000)), zmq.POLLIN):
            return False
        frames = self._dealer.recv_multipart()
        header, payloads = decode(frames)
        if header.kind == Kind.JOB:
            job = StubJob(header, jobs_in(header, payloads), frames)
            self.received.append(job)
            self._jobs.append(job)
        elif header.kind == Kind.WELCOME:
            self.welcomes.append(header)
        elif header.kind == Kind.HEARTBEAT:
            self.master_heartbeats += 1
        elif header.kind == Kind.BYE:
            self.goodbyes += 1
        return True

    def _read_until(
        self, done: Callable[[], bool], what: str, timeout_s: float | None = None
    ) -> None:
        deadline = time.monotonic() + (self.timeout_s if timeout_s is None else timeout_s)
        while not done():
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"stub worker {self.name!r} got no {what}")
            self._read(left)

    def next_job(self, timeout_s: float | None = None) -> StubJob:
        """The next job message the master hands this worker (AssertionError if none comes)."""
        self._read_until(lambda: bool(self._jobs), "job", timeout_s)
        return self._jobs.popleft()

    def jobs(self, messages: int, timeout_s: float | None = None) -> list[StubJob]:
        """The next ``messages`` job messages."""
        self._read_until(lambda: len(self._jobs) >= messages, f"{messages} job messages", timeout_s)
        return [self._jobs.popleft() for _ in range(messages)]

    def pending(self) -> list[StubJob]:
        """The job messages that have arrived and not been taken, without waiting."""
        while self._read(0):
            pass
        out = list(self._jobs)
        self._jobs.clear()
        return out

    # answers -----------------------------------------------------------------

    def answer(
        self,
        job: StubJob,
        results: Sequence[bytes] | None = None,
        *,
        errors: Mapping[int, tuple[str, str]] | None = None,
    ) -> None:
        """Send the result of ``job``: ``results`` (default: each payload echoed).

        ``errors`` maps a job's offset in the message to ``(type, message)``
        for the jobs that fail. Calling it again sends a duplicate; calling it
        after :meth:`die` sends a late result.
        """
        out = list(job.payloads if results is None else results)
        if len(out) != len(job.payloads):
            raise ValueError(f"{len(job.payloads)} results are due, got {len(out)}")
        reply = job.header.reply()
        reply.extra = dict(job.header.extra or {}, w=self.identity)
        if errors:
            stage = job.header.stage
            reply.errors = [
                ErrorInfo(offset, type_, message, "", self.name, stage)
                for offset, (type_, message) in sorted(errors.items())
            ]
            for offset in errors:
                out[offset] = b""
        self._results.send_multipart([reply.to_wire(), *frames_for(reply, out)])

    def fail(
        self, job: StubJob, type_: str = "RuntimeError", message: str = "stub failure"
    ) -> None:
        """Answer every job of ``job`` with the error ``type_: message``."""
        self.answer(job, errors={i: (type_, message) for i in range(len(job.payloads))})

    def add_credit(self, credit: int = 1) -> None:
        """Ask for ``credit`` more jobs without sending a result (a CREDIT message)."""
        self._dealer.send_multipart([Header(Kind.CREDIT, 0, extra={"credit": credit}).to_wire()])
