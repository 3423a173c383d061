"""Stopping child processes by PID, and the command line of a worker process.

::

    proc = subprocess.Popen(worker_command("app:MyWorker", "w0", db="tcp://10.0.0.1:5558"))
    ...
    terminate(proc, grace_s=5.0)          # SIGTERM, SIGKILL after 5 s, reaped
    terminate_all(procs, grace_s=5.0)     # N processes for one grace period

A process is a :class:`subprocess.Popen` (a child of this process) or a
:class:`psutil.Process` (any process; psutil checks that its PID was not
reused before signalling it). A process that has already exited is fine.

This module imports nothing of palm but :mod:`palm.errors`, so every layer
may use it.
"""

from __future__ import annotations

import logging
import signal
import subprocess
import sys
import time
from collections.abc import Iterable
from typing import Any, TypeAlias

import psutil

from palm.errors import ConfigError

__all__ = ["AnyProcess", "terminate", "terminate_all", "worker_command"]

log = logging.getLogger(__name__)

#: What the helpers stop: a child started here, or any process psutil names.
AnyProcess: TypeAlias = "subprocess.Popen[Any] | psutil.Process"

#: How long to wait for a process that is not a child of this one to vanish
#: after SIGKILL (a child is always reaped, however long that takes).
KILL_WAIT_S = 10.0


def terminate(process: AnyProcess, grace_s: float = 5.0) -> int | None:
    """Stop one process: SIGTERM, wait up to ``grace_s``, SIGKILL if still alive, reap.

    Returns the exit code (negative for a signal, as :mod:`subprocess` reports
    it), or None when it cannot be known (a process that is not a child of this
    one). ``grace_s=0`` sends SIGKILL at once, with no SIGTERM.
    """
    return terminate_all([process], grace_s)[0]


def terminate_all(processes: Iterable[AnyProcess], grace_s: float = 5.0) -> list[int | None]:
    """Stop several processes within one grace period; their exit codes, in order.

    Every process gets SIGTERM first, in the order given (pass the newest first
    to stop a stack of processes), then each is waited for against one shared
    deadline ``grace_s`` away; those still alive then are SIGKILLed and reaped.
    ``grace_s=0`` SIGKILLs them all at once.
    """
    procs = list(processes)
    codes: list[int | None] = [None] * len(procs)
    done = [False] * len(procs)
    if grace_s > 0:
        for proc in procs:
            _signal(proc, signal.SIGTERM)
        deadline = time.monotonic() + grace_s
        for i, proc in enumerate(procs):
            done[i], codes[i] = _wait(proc, max(0.0, deadline - time.monotonic()))
    left = [i for i, finished in enumerate(done) if not finished]
    for i in left:
        if grace_s > 0:
            log.debug("process %d outlived %.1f s after SIGTERM; SIGKILL", procs[i].pid, grace_s)
        _signal(procs[i], signal.SIGKILL)
    for i in left:
        done[i], codes[i] = _wait(procs[i], None)
        if not done[i]:
            log.warning("process %d still there %.0f s after SIGKILL", procs[i].pid, KILL_WAIT_S)
    return codes


def _signal(proc: AnyProcess, sig: signal.Signals) -> None:
    if isinstance(proc, subprocess.Popen):
        proc.send_signal(sig)  # it polls first: a child already reaped is not signalled
        return
    try:
        proc.send_signal(sig)
    except psutil.Error:  # gone, or its PID now names another process
        pass


def _wait(proc: AnyProcess, timeout_s: float | None) -> tuple[bool, int | None]:
    """(exited, exit code) after waiting up to ``timeout_s`` (None: a child until it
    exits, another process :data:`KILL_WAIT_S`)."""
    if isinstance(proc, subprocess.Popen):
        try:
            return True, proc.wait(timeout_s)
        except subprocess.TimeoutExpired:
            return False, None
    deadline = time.monotonic() + (KILL_WAIT_S if timeout_s is None else timeout_s)
    delay_s = 0.001
    while True:
        try:
            if not proc.is_running():  # gone, or its PID names another process now
                return True, None
            # Reaps a child of this process; for another process it only polls.
            code: int | None = proc.wait(0)
            return True, code
        except psutil.TimeoutExpired:
            pass
        except psutil.Error:
            return True, None
        if _zombie(proc):
            return True, None
        left = deadline - time.monotonic()
        if left <= 0:
            return False, None
        time.sleep(min(delay_s, left))
        delay_s = min(delay_s * 2, 0.05)


def _zombie(proc: psutil.Process) -> bool:
    """Exited, but not a child of this process: only its parent can reap it."""
    try:
        return proc.status() == psutil.STATUS_ZOMBIE
    except psutil.Error:
        return True  # gone altogether


def worker_command(
    spec: str,
    name: str,
    *,
    db: str | None = None,
    push: str | None = None,
    pull: str | None = None,
    credit: int | None = None,
    heartbeat_interval_s: float | None = None,
    redis: str | None = None,
    cluster: str | None = None,
    log_level: str | None = None,
    python: str = sys.executable,
) -> list[str]:
    """The command line of one worker process (``python -m palm.ops.worker_process``).

    ``spec`` is the Worker class (``module:Class``) and ``name`` the worker's
    name. The worker needs the master's ``db`` address, or its ``push`` and
    ``pull`` addresses (the master's worker-push and worker-pull endpoints).
    Options left at None are not passed: the worker process's defaults apply.
    """
    if db is None and (push is None or pull is None):
        raise ConfigError("a worker needs the master's db address, or its push and pull addresses")
    cmd = [python, "-m", "palm.ops.worker_process", spec, name]
    options: list[tuple[str, object]] = [
        ("--push", push),
        ("--pull", pull),
        ("--db", db),
        ("--credit", credit),
        ("--heartbeat-interval-s", heartbeat_interval_s),
        ("--redis", redis),
        ("--cluster", cluster),
        ("--log-level", log_level),
    ]
    for flag, value in options:
        if value is not None:
            cmd += [flag, str(value)]
    return cmd
