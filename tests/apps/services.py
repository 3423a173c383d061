"""Servers and workers the tests run in real processes."""

from __future__ import annotations

import hashlib
import os
import signal
import time

from palm import zero_copy
from palm.standalone import Server, Worker
from palm.state.logs import current_request_id


class EchoServer(Server):
    def foo(self, message: bytes) -> bytes:
        return b"you sent me " + message

    def echo(self, message: bytes) -> bytes:
        return message

    def boom(self, message: bytes) -> bytes:
        raise ValueError("boom: " + message.decode())

    def notbytes(self, message: bytes) -> str:
        return "a str"

    def slow(self, message: bytes) -> bytes:
        time.sleep(float(message))
        return message


class EchoWorker(Worker):
    def foo(self, message: bytes) -> bytes:
        return self.name.encode() + b" processed " + message

    def echo(self, message: bytes) -> bytes:
        return message

    def tag(self, message: bytes) -> bytes:
        return b"ok:" + message

    def poison(self, message: bytes) -> bytes:
        if message == b"poison":
            os._exit(1)
        return b"ok:" + message

    def jitter(self, message: bytes) -> bytes:
        # later jobs often finish first: exercises ordered delivery
        n = int(message)
        time.sleep(0.002 if n % 3 == 0 else 0.0)
        return message

    def boom(self, message: bytes) -> bytes:
        raise RuntimeError("worker boom " + message.decode())

    def expand(self, message: bytes) -> bytes:
        # a small job with a large result: 1 MiB of its digest, then the job itself
        return hashlib.sha256(message).digest() * 32768 + message

    def digest_slowly(self, message: bytes) -> bytes:
        # a job that holds its worker a while: the digest of its payload, after 0.3 s
        time.sleep(0.3)
        return hashlib.sha256(message).digest()

    def request_id(self, message: bytes) -> bytes:
        # the HTTP request id palm puts in the logging context while a job runs
        return current_request_id.get().encode() + b"|" + message


class CacheWorker(Worker):
    """Workers that share values through the cluster's cache and log to it."""

    def remember(self, message: bytes) -> bytes:
        return self.set(message, key="shared").encode()

    def recall(self, message: bytes) -> bytes:
        value = self.get("shared")
        return self.name.encode() + b"=" + (value if value is not None else b"<missing>")

    def chatty(self, message: bytes) -> bytes:
        self.logger.warning("%s handled %s", self.name, message.decode())
        return message

    def echo(self, message: bytes) -> bytes:
        return message


class SlowWorker(Worker):
    def nap(self, message: bytes) -> bytes:
        time.sleep(float(message))
        return message


#: The directory where :class:`NotingWorker` notes the jobs it runs.
RUNS_DIR_ENV = "PALM_TEST_RUNS_DIR"


class NotingWorker(Worker):
    """Notes every job it ran (one byte per job, in a file named after its pid
    under ``$PALM_TEST_RUNS_DIR``) before its result goes out: how many results
    the workers sent in all, late ones included."""

    def _ran(self, name: str = "") -> None:
        path = os.path.join(os.environ[RUNS_DIR_ENV], name + str(os.getpid()))
        with open(path, "ab") as runs:
            runs.write(b".")

    def nap(self, message: bytes) -> bytes:
        time.sleep(float(message))
        self._ran()
        return b"slept " + message

    def hold(self, message: bytes) -> bytes:
        """Says it holds the job (a ``held-<pid>`` file), then waits for the
        file named ``message`` to exist (for 120 s at most) before answering."""
        self._ran("held-")
        deadline = time.monotonic() + 120
        while not os.path.exists(message) and time.monotonic() < deadline:
            time.sleep(0.01)
        self._ran()
        return b"released"


#: A file :class:`ViewWorker` creates before it SIGKILLs itself on a ``kill`` job.
KILL_MARK_ENV = "PALM_TEST_KILL_MARK"


class ViewWorker(Worker):
    """Functions taking a read-only memoryview of the received frame (``@zero_copy``),
    and one taking bytes, all answering with what they were given or part of it."""

    @zero_copy
    def view_echo(self, message: memoryview) -> memoryview:
        return message

    @zero_copy
    def view_tail(self, message: memoryview) -> memoryview:
        return message[8:]

    @zero_copy
    def view_kind(self, message: memoryview) -> bytes:
        return b"%s:%d:%d" % (type(message).__name__.encode(), message.readonly, len(message))

    @zero_copy
    def view_or_die(self, message: memoryview) -> memoryview:
        """Echoes, but the first ``kill`` job of the run kills its worker (SIGKILL)."""
        mark = os.environ[KILL_MARK_ENV]
        if message[:4] == b"kill" and not os.path.exists(mark):
            open(mark, "wb").close()
            os.kill(os.getpid(), signal.SIGKILL)
        return message

    def echo(self, message: bytes) -> bytes:
        return message


class DiesOnceStarted(Worker):
    """Builds fine, then its process ends with an error: what a job that kills
    its worker looks like to the pool (a poison job)."""

    def start(self) -> None:  # type: ignore[override]
        os._exit(1)


class BrokenInit(Worker):
    """Cannot be built: a failure to start."""

    def __init__(self, *args: object, **kwargs: object) -> None:
        raise RuntimeError("this worker cannot start")
