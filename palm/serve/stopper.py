"""A stop request that wakes a ZeroMQ poller, and the signals that make one.

Every palm process that serves (servers, masters, workers) stops the same way:
``stop()`` from any thread, or SIGINT/SIGTERM while :meth:`Stopper.on_signals`
is active. Only ``start()`` methods enter ``on_signals()``, and the previous
handlers come back when it returns.
"""

from __future__ import annotations

import os
import select
import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from types import FrameType

__all__ = ["Stopper"]


class Stopper:
    """A stop request that wakes a ZeroMQ poller: a pipe whose read end is polled.

    ``stop()`` may be called from any thread or from a signal handler: it sets
    a plain flag and writes to the pipe, and takes no lock. (A handler that
    sets a ``threading.Event`` can deadlock: it runs on the main thread
    between two bytecodes, and the main thread may be inside that event's
    ``wait()`` holding its lock.)
    """

    def __init__(self) -> None:
        self._read_fd, self._write_fd = os.pipe()
        os.set_blocking(self._read_fd, False)
        os.set_blocking(self._write_fd, False)
        self._stopped = False
        self._signals_active = False
        self._close_pending = False

    @property
    def fd(self) -> int:
        return self._read_fd

    @property
    def stopping(self) -> bool:
        return self._stopped

    def stop(self) -> None:
        self._stopped = True
        try:
            os.write(self._write_fd, b"x")
        except (BlockingIOError, OSError):
            pass

    def wait(self, timeout_s: float) -> bool:
        """Wait up to ``timeout_s`` for a stop request; whether there is one.

        For a supervisor's loop on the main thread: a signal ends the wait at
        once (inside :meth:`on_signals`, the signal's own write to the pipe).
        """
        if self._stopped:
            return True
        readable, _, _ = select.select([self._read_fd], [], [], max(0.0, timeout_s))
        if readable and not self._stopped:
            try:  # a signal's wake-up byte, read before its handler ran: drop it
                os.read(self._read_fd, 512)
            except (BlockingIOError, OSError):
                pass
        return self._stopped

    def close(self) -> None:
        """Close the pipe (once the signal handlers that write to it are gone)."""
        if self._signals_active:
            self._close_pending = True
            return
        for fd in (self._read_fd, self._write_fd):
            try:
                os.close(fd)
            except OSError:
                pass

    @contextmanager
    def on_signals(self) -> Iterator[None]:
        """Stop on SIGINT/SIGTERM while inside, when running in the main thread."""
        if threading.current_thread() is not threading.main_thread():
            yield
            return

        def handler(signum: int, frame: FrameType | None) -> None:
            self.stop()

        previous = {sig: signal.signal(sig, handler) for sig in (signal.SIGINT, signal.SIGTERM)}
        # The C-level handler writes to the pipe at once, so a signal landing
        # just before the poller blocks still wakes it (Python runs `handler`
        # only between bytecodes).
        old_fd = signal.set_wakeup_fd(self._write_fd, warn_on_full_buffer=False)
        self._signals_active = True
        try:
            yield
        finally:
            signal.set_wakeup_fd(old_fd)
            for sig, old in previous.items():
                signal.signal(sig, old)
            self._signals_active = False
            if self._close_pending:
                self._close_pending = False
                self.close()
