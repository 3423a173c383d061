"""A supervised pool of worker processes.

:class:`WorkerPool` starts ``processes`` worker processes, restarts one that
exits unexpectedly (waiting longer after each quick crash, up to
``max_backoff_s``), can grow or shrink, and stops them all: SIGTERM first,
SIGKILL for any still alive after ``grace_s``. Shrinking does not wait: a
worker asked to leave (SIGTERM) finishes the jobs it holds and says goodbye
to its master while the pool goes on; :meth:`WorkerPool.check` reaps it, or
SIGKILLs it once ``grace_s`` has passed. With a policy, a
:class:`~palm.workers.controller.ScaleController` sizes the pool. The workers die with the pool's
process, even one killed with SIGKILL (on Linux).

A worker that cannot start (its class raises in ``__init__``, its module does
not import) would crash-loop for ever: after ``max_start_failures`` exits with
an error in a row, each within ``start_window_s`` of its start, the pool gives
up instead:
:attr:`WorkerPool.gave_up` says why, :meth:`WorkerPool.run` returns, and
``palm worker`` exits with :data:`GAVE_UP_EXIT`.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import subprocess
import threading
import time
from dataclasses import dataclass, field
from typing import Any

from palm.ops.processes import (
    STARTED_FD_ENV,
    popen,
    terminate,
    terminate_all,
    worker_command,
)
from palm.serve.stopper import Stopper
from palm.workers.autoscale import BacklogProbe, ScalePolicy
from palm.workers.controller import ScaleController
from palm.workers.local import ProcessBackend

__all__ = ["GAVE_UP_EXIT", "WorkerPool"]

log = logging.getLogger(__name__)

#: ``palm worker``'s exit status when its workers cannot start.
GAVE_UP_EXIT = 3


@dataclass
class _Slot:
    index: int
    proc: subprocess.Popen[bytes] | None = None
    started: float = 0.0
    backoff_s: float = 0.0
    restart_at: float = 0.0
    restarts: int = 0
    #: exits in a row, each soon after its start
    start_failures: int = 0
    #: read end of the pipe the worker writes to once it started (worker_process)
    started_fd: int = -1
    pids: list[int] = field(default_factory=list)


class WorkerPool:
    """Run and supervise worker processes of one Worker class."""

    def __init__(
        self,
        spec: str,
        *,
        processes: int = 2,
        name: str = "worker",
        connect: str | None = None,
        push_address: str | None = None,
        pull_address: str | None = None,
        credit: int = 2,
        heartbeat_interval_s: float = 1.0,
        initial_backoff_s: float = 0.5,
        max_backoff_s: float = 30.0,
        grace_s: float = 5.0,
        env: dict[str, str] | None = None,
        log_level: str = "INFO",
        max_start_failures: int = 3,
        start_window_s: float = 10.0,
    ) -> None:
        if processes < 0:
            raise ValueError("processes must be zero or more")
        if connect is None and (push_address is None or pull_address is None):
            raise ValueError("give connect (the master's db address) or push and pull addresses")
        self.spec = spec
        self.name = name
        self.connect = connect
        self.push_address = push_address
        self.pull_address = pull_address
        self.credit = credit
        self.heartbeat_interval_s = heartbeat_interval_s
        self.initial_backoff_s = initial_backoff_s
        self.max_backoff_s = max_backoff_s
        self.grace_s = grace_s
        self.env = env
        self.log_level = log_level
        self.max_start_failures = max_start_failures
        self.start_window_s = start_window_s
        #: why the pool gave up (its workers kept failing at start), or None
        self.gave_up: str | None = None
        self.slots = [_Slot(i) for i in range(processes)]
        self._next_index = processes
        #: workers asked to leave, with the time they must be gone by
        self.leaving: list[tuple[subprocess.Popen[bytes], float]] = []
        self._lock = threading.Lock()
        self._stopped = threading.Event()
        self._controller: ScaleController | None = None

    # processes -----------------------------------------------------------------

    def _command(self, slot: _Slot) -> list[str]:
        return worker_command(
            self.spec,
            f"{self.name}-{slot.index}",
            push=self.push_address or None,
            pull=self.pull_address or None,
            db=self.connect or None,
            credit=self.credit,
            heartbeat_interval_s=self.heartbeat_interval_s,
            log_level=self.log_level,
        )

    def _spawn(self, slot: _Slot) -> None:
        env = dict(os.environ)
        if self.env:
            env.update(self.env)
        _close(slot.started_fd)
        slot.started_fd, write_fd = os.pipe()
        os.set_blocking(slot.started_fd, False)
        env[STARTED_FD_ENV] = str(write_fd)
        try:
            slot.proc = popen(self._command(slot), env=env, pass_fds=(write_fd,))
        finally:
            os.close(write_fd)
        slot.started = time.monotonic()
        slot.pids.append(slot.proc.pid)
        log.info("started %s-%d (pid %d)", self.name, slot.index, slot.proc.pid)

    def start(self) -> None:
        with self._lock:
            for slot in self.slots:
                self._spawn(slot)

    @property
    def pids(self) -> list[int]:
        """PIDs of the worker processes alive now."""
        with self._lock:
            return [s.proc.pid for s in self.slots if s.proc is not None and s.proc.poll() is None]

    def check(self) -> None:
        """Restart workers that exited, with backoff; call it now and then."""
        now = time.monotonic()
        with self._lock:
            self._reap_leaving(now)
            for slot in self.slots:
                proc = slot.proc
                if proc is None:
                    if slot.restart_at and now >= slot.restart_at:
                        slot.restart_at = 0.0
                        slot.restarts += 1
                        self._spawn(slot)
                    continue
                code = proc.poll()
                ran_s = now - slot.started
                if code is None and ran_s > self.start_window_s:
                    slot.start_failures = 0
                if code is None or self._stopped.is_set():
                    continue
                if ran_s > 30:
                    slot.backoff_s = 0.0
                # a worker that exits with an error soon after its start, before it
                # said it started, failed to start; one killed by a signal (code < 0)
                # was stopped from outside, one that started was stopped by a job
                failed_at_start = (
                    code > 0 and ran_s <= self.start_window_s and not _said(slot.started_fd)
                )
                slot.start_failures = slot.start_failures + 1 if failed_at_start else 0
                if self.max_start_failures and slot.start_failures >= self.max_start_failures:
                    self.gave_up = (
                        f"{self.name}-{slot.index} ({self.spec}) failed at start "
                        f"{slot.start_failures} times in a row (last: exit code {code} "
                        f"after {ran_s:.1f} s); giving up"
                    )
                    log.error("%s", self.gave_up)
                    slot.proc = None
                    return
                slot.backoff_s = (
                    self.initial_backoff_s
                    if slot.backoff_s == 0
                    else min(slot.backoff_s * 2, self.max_backoff_s)
                )
                log.warning(
                    "%s-%d (pid %d) exited with %s after %.1f s; restarting in %.1f s",
                    self.name,
                    slot.index,
                    proc.pid,
                    code,
                    ran_s,
                    slot.backoff_s,
                )
                slot.proc = None
                slot.restart_at = now + slot.backoff_s

    def scale(self, processes: int) -> None:
        """Grow or shrink the pool to ``processes`` workers; the newest leave first,
        gracefully (see the module's docstring)."""
        with self._lock:
            while len(self.slots) < processes:
                slot = _Slot(self._next_index)
                self._next_index += 1
                self.slots.append(slot)
                self._spawn(slot)
            while len(self.slots) > processes:
                slot = self.slots.pop()
                if slot.proc is not None and slot.proc.poll() is None:
                    slot.proc.send_signal(signal.SIGTERM)
                    self.leaving.append((slot.proc, time.monotonic() + self.grace_s))
                    log.info("%s-%d (pid %d) asked to leave", self.name, slot.index, slot.proc.pid)

    def _reap_leaving(self, now: float) -> None:
        still: list[tuple[subprocess.Popen[bytes], float]] = []
        for proc, deadline in self.leaving:
            if proc.poll() is not None:
                continue
            if now >= deadline:
                log.warning(
                    "worker pid %d still there %.1f s after SIGTERM", proc.pid, self.grace_s
                )
                terminate(proc, grace_s=0)
                continue
            still.append((proc, deadline))
        self.leaving = still

    @property
    def names(self) -> list[str]:
        """Names of the workers that are (or will be again, after a crash) alive."""
        with self._lock:
            return [f"{self.name}-{s.index}" for s in self.slots]

    def stop(self) -> None:
        """Stop every worker: SIGTERM, then SIGKILL after the grace period."""
        self._stopped.set()
        with self._lock:
            procs = [s.proc for s in self.slots if s.proc is not None]
            procs += [proc for proc, _ in self.leaving]
            terminate_all(procs, grace_s=self.grace_s)
            self.leaving = []
            for slot in self.slots:
                _close(slot.started_fd)
                slot.started_fd = -1

    @property
    def controller(self) -> ScaleController | None:
        """The scaling controller, once a policy drives the pool."""
        return self._controller

    def controller_snapshot(self) -> dict[str, Any]:
        """The scaling gauges (empty before a policy drives the pool)."""
        return self._controller.snapshot() if self._controller is not None else {}

    def autoscale(self, policy: ScalePolicy, probe: BacklogProbe) -> None:
        """Grow or shrink once, as ``policy`` says for the backlog ``probe`` reads."""
        if self._controller is None:
            self._controller = ScaleController(policy, probe, ProcessBackend(self))
        self._controller.step()

    def run(
        self,
        poll_s: float = 0.2,
        policy: ScalePolicy | None = None,
        scale_every_s: float = 1.0,
    ) -> None:
        """Start, supervise (and scale, with a ``policy``) until SIGINT/SIGTERM, or until
        the pool gives up (:attr:`gave_up`), then stop."""
        stopper = Stopper()
        probe = BacklogProbe(self.connect) if policy is not None and self.connect else None
        next_scale = time.monotonic() + scale_every_s
        try:
            with stopper.on_signals():
                try:
                    self.start()
                    while not stopper.wait(poll_s):
                        self.check()
                        if self.gave_up is not None:
                            break
                        if (
                            probe is not None
                            and policy is not None
                            and time.monotonic() >= next_scale
                        ):
                            self.autoscale(policy, probe)
                            next_scale = time.monotonic() + scale_every_s
                finally:
                    if probe is not None:
                        probe.close()
                    self.stop()
        finally:
            stopper.close()


def _said(fd: int) -> bool:
    """Whether the worker wrote to its started pipe."""
    try:
        return fd >= 0 and os.read(fd, 1) == b"1"
    except OSError:
        return False


def _close(fd: int) -> None:
    if fd >= 0:
        with contextlib.suppress(OSError):
            os.close(fd)
