"""What the in-process harnesses share: threads that run a service, background
calls, waiting on a condition, fresh endpoints, and a shutdown that always runs.
"""

from __future__ import annotations

import logging
import shutil
import tempfile
import threading
import time
import uuid
from collections.abc import Callable
from concurrent.futures import Future
from types import TracebackType
from typing import Literal, ParamSpec, TypeVar

from palm.errors import ConfigError

__all__ = ["Harness", "ServiceThread", "Transport", "wait_until"]

log = logging.getLogger("palm.testing")

T = TypeVar("T")
P = ParamSpec("P")

#: Where in-process endpoints live: ``inproc://`` (the default) or ``ipc://`` in a
#: private temporary directory (peers reconnect to an endpoint that is bound again).
Transport = Literal["inproc", "ipc"]


def wait_until(
    predicate: Callable[[], T | None],
    timeout_s: float = 2.0,
    *,
    interval_s: float = 0.002,
    what: str = "",
) -> T:
    """Call ``predicate`` until it returns something true, and return that.

    Raises :class:`AssertionError` (a test failure) naming ``what`` when
    ``timeout_s`` passes first.
    """
    deadline = time.monotonic() + timeout_s
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {timeout_s} s waiting for {what or predicate}")
        time.sleep(interval_s)


class ServiceThread:
    """Runs a service's blocking ``run`` in a daemon thread and keeps what it raised."""

    def __init__(self, name: str, run: Callable[[], None], stop: Callable[[], None]) -> None:
        self.name = name
        self.error: BaseException | None = None
        self._run = run
        self._stop = stop
        self._thread = threading.Thread(target=self._main, name=name, daemon=True)

    def _main(self) -> None:
        try:
            self._run()
        except BaseException as exc:
            self.error = exc
            log.exception("%s failed", self.name)

    @property
    def alive(self) -> bool:
        return self._thread.is_alive()

    def start(self) -> None:
        self._thread.start()

    def stop(self, timeout_s: float) -> None:
        """Ask the service to stop and join its thread; RuntimeError if it will not end."""
        # a service that returned already has closed its stop pipe: never poke it again
        if self._thread.is_alive():
            self._stop()
        self._thread.join(timeout_s)
        if self._thread.is_alive():
            raise RuntimeError(f"{self.name} did not stop within {timeout_s} s")


class Harness:
    """Base of the in-process harnesses: a context manager whose exit stops,
    joins and closes everything it started, in reverse order, even when the
    body failed. Errors met on the way out are raised after everything is
    closed (and only logged when the body itself failed).
    """

    def __init__(self, name: str, transport: Transport, timeout_s: float) -> None:
        if transport not in ("inproc", "ipc"):
            raise ConfigError(f"transport must be 'inproc' or 'ipc', got {transport!r}")
        self.name = name
        self.transport: Transport = transport
        self.timeout_s = timeout_s
        self._closers: list[tuple[str, Callable[[], None]]] = []
        self._calls: list[threading.Thread] = []
        self._token = uuid.uuid4().hex[:8]
        self._directory: str | None = None
        self._count = 0

    # resources ---------------------------------------------------------------

    def _on_close(self, label: str, closer: Callable[[], None]) -> None:
        """Run ``closer`` when the harness closes (last registered, first run)."""
        self._closers.append((label, closer))

    def _next(self, prefix: str) -> str:
        self._count += 1
        return f"{prefix}{self._count}"

    def endpoint(self, label: str) -> str:
        """A fresh endpoint of this harness's transport, unique to it."""
        if self.transport == "inproc":
            return f"inproc://palm-testing/{self.name}/{self._token}/{label}"
        if self._directory is None:
            directory = tempfile.mkdtemp(prefix="palm-t-")
            self._directory = directory
            self._on_close("ipc directory", lambda: shutil.rmtree(directory, ignore_errors=True))
        return f"ipc://{self._directory}/{label}"

    def spawn(self, fn: Callable[P, T], /, *args: P.args, **kwargs: P.kwargs) -> Future[T]:
        """Run ``fn(*args, **kwargs)`` in a thread; its :class:`~concurrent.futures.Future`.

        Use it for a blocking client call while the test drives the other
        side (``spawn(client.eval, 'foo', b'x').result(timeout=2)``). The
        call's thread is joined when the harness closes; a client used by a
        running call must not be used by the test meanwhile.
        """
        future: Future[T] = Future()

        def main() -> None:
            if not future.set_running_or_notify_cancel():
                return
            try:
                future.set_result(fn(*args, **kwargs))
            except BaseException as exc:
                future.set_exception(exc)

        thread = threading.Thread(target=main, name=f"palm-testing-call-{self.name}", daemon=True)
        self._calls.append(thread)
        thread.start()
        return future

    def _calls_running(self) -> bool:
        return any(t.is_alive() for t in self._calls)

    def _close_socket_owner(self, close: Callable[[], None]) -> Callable[[], None]:
        """A closer for a client's sockets that leaves them alone while a call may use them."""

        def closer() -> None:
            if self._calls_running():
                raise RuntimeError("a spawned call is still running; its client was left open")
            close()

        return closer

    # lifecycle ---------------------------------------------------------------

    def close(self) -> list[BaseException]:
        """Stop and close everything, last started first; the errors met on the way."""
        errors: list[BaseException] = []
        for thread in self._calls:
            thread.join(self.timeout_s + 1.0)
        while self._closers:
            label, closer = self._closers.pop()
            try:
                closer()
            except BaseException as exc:
                log.warning("closing %s of %s: %s", label, self.name, exc)
                errors.append(exc)
        self._calls.clear()
        self._directory = None
        return errors

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        errors = self.close()
        if errors and exc is None:
            raise errors[0]
