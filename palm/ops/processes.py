"""Starting child processes tied to this one, stopping them by PID, and the
command line of a worker process.

::

    proc = popen(worker_command("app:MyWorker", "w0", db="tcp://10.0.0.1:5558"))
    ...
    terminate(proc, grace_s=5.0)          # SIGTERM, SIGKILL after 5 s, reaped
    terminate_all(procs, grace_s=5.0)     # N processes for one grace period

A process is a :class:`subprocess.Popen` (a child of this process) or a
:class:`psutil.Process` (any process; psutil checks that its PID was not
reused before signalling it). A process that has already exited is fine.

Every child palm starts goes through :func:`popen`: on Linux the child asks
the kernel for SIGTERM when its parent dies (``PR_SET_PDEATHSIG``), so a
parent killed with SIGKILL leaves nothing running, down the whole tree (each
palm process that starts children starts them the same way). The kernel sends
that signal when the *thread* that forked the child ends, so :func:`popen`
forks on the main thread, or else on one daemon thread that lives as long as
the process. :func:`claim_workdir` and :func:`remove_stale_workdirs` let the
next run remove the work directory of a process that died without cleaning up.

This module imports nothing of palm but :mod:`palm.errors`, so every layer
may use it.
"""

from __future__ import annotations

import collections
import contextlib
import ctypes
import json
import logging
import os
import queue
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterable
from concurrent.futures import Future
from pathlib import Path
from typing import IO, Any, TypeAlias, TypeVar

import psutil

from palm.errors import ConfigError

__all__ = [
    "STARTED_FD_ENV",
    "AnyProcess",
    "OutputTail",
    "claim_workdir",
    "die_with_parent",
    "on_lasting_thread",
    "popen",
    "remove_stale_workdirs",
    "set_death_signal",
    "terminate",
    "terminate_all",
    "worker_command",
]

log = logging.getLogger(__name__)

_T = TypeVar("_T")

#: What the helpers stop: a child started here, or any process psutil names.
AnyProcess: TypeAlias = "subprocess.Popen[Any] | psutil.Process"

#: How long to wait for a process that is not a child of this one to vanish
#: after SIGKILL (a child is always reaped, however long that takes).
KILL_WAIT_S = 10.0

_PR_SET_PDEATHSIG = 1
#: The file in a work directory that names the process owning it.
OWNER_FILE = "owner.json"


# tying children to this process ---------------------------------------------


def _prctl() -> Callable[..., int] | None:
    if not sys.platform.startswith("linux"):
        return None
    try:
        fn: Callable[..., int] = ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None
    return fn


def set_death_signal(parent_pid: int, sig: int = signal.SIGTERM) -> bool:
    """Ask Linux to send ``sig`` to this process when its parent thread dies.

    For a process that was forked without :func:`popen` (gunicorn's workers:
    call it in gunicorn's ``post_fork`` hook). Exits at once if the parent,
    ``parent_pid``, is already gone. False where the platform has no prctl.
    """
    prctl = _prctl()
    if prctl is None:
        return False
    prctl(_PR_SET_PDEATHSIG, int(sig), 0, 0, 0)
    if os.getppid() != parent_pid:  # the parent died before prctl took effect
        os._exit(1)
    return True


def die_with_parent(sig: int = signal.SIGTERM) -> Callable[[], None] | None:
    """A ``preexec_fn`` asking Linux to send ``sig`` to the child when this process dies.

    Only valid for a fork on the main thread or on a thread that lives as long
    as the process (:func:`popen` sees to that). None where unavailable.
    """
    prctl = _prctl()  # looked up before the fork
    if prctl is None:
        return None
    parent_pid = os.getpid()

    def hook() -> None:
        prctl(_PR_SET_PDEATHSIG, int(sig), 0, 0, 0)
        if os.getppid() != parent_pid:
            os._exit(1)

    return hook


_Request: TypeAlias = "tuple[Callable[[], Any], Future[Any]]"
_spawn_queue: queue.SimpleQueue[_Request] = queue.SimpleQueue()
_spawner: threading.Thread | None = None
_spawner_lock = threading.Lock()


def _spawn_loop() -> None:
    while True:
        call, future = _spawn_queue.get()
        if not future.set_running_or_notify_cancel():
            continue
        try:
            future.set_result(call())
        except BaseException as exc:  # handed to the caller's thread
            future.set_exception(exc)


def _forget_spawner() -> None:
    """In a forked child: the spawner thread is this process's parent's, not its own."""
    global _spawner, _spawn_queue, _spawner_lock
    _spawner = None
    _spawn_queue = queue.SimpleQueue()
    _spawner_lock = threading.Lock()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_spawner)


def on_lasting_thread(call: Callable[[], _T]) -> _T:
    """``call()`` on a thread that lives as long as the process, and its result.

    The main thread, or else one daemon thread that never ends: what forks a
    child with a death signal must, since the kernel signals the child when
    the forking *thread* ends.
    """
    if threading.current_thread() is threading.main_thread():
        return call()
    global _spawner
    with _spawner_lock:
        if _spawner is None:
            _spawner = threading.Thread(target=_spawn_loop, name="palm-spawner", daemon=True)
            _spawner.start()
    future: Future[_T] = Future()
    _spawn_queue.put((call, future))
    return future.result()


def popen(
    args: list[str], *, death_signal: int = signal.SIGTERM, **options: Any
) -> subprocess.Popen[Any]:
    """:class:`subprocess.Popen` of a child that dies with this process (on Linux).

    The child gets ``death_signal`` when this process dies (SIGTERM: a chance
    to stop cleanly; SIGKILL for children with nothing to hand over). Takes
    Popen's arguments but ``preexec_fn``. From a thread other than the main
    one, the fork happens on a daemon thread that never ends, since the
    kernel signals the child when the forking thread ends.
    """
    if "preexec_fn" in options:
        raise ValueError("popen sets preexec_fn itself")
    options["preexec_fn"] = die_with_parent(death_signal)
    if options["preexec_fn"] is None:
        return subprocess.Popen(args, **options)
    return on_lasting_thread(lambda: subprocess.Popen(args, **options))


class OutputTail:
    """A child's stderr, kept in a file and followed: each line is forwarded to this
    process's stderr and the last ``keep`` are kept, to say why the child died.

    The child writes to the file (:attr:`sink`, for Popen's ``stderr``), never to a
    pipe, so a child that outlives this process (killed with SIGKILL) never fails
    on a broken pipe while it stops.
    """

    def __init__(self, path: str | os.PathLike[str], keep: int = 20, poll_s: float = 0.1) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.sink: IO[str] = open(self.path, "a", encoding="utf-8")  # noqa: SIM115
        self._reader: IO[str] = open(self.path, encoding="utf-8", errors="replace")  # noqa: SIM115
        self._lines: collections.deque[str] = collections.deque(maxlen=keep)
        self._poll_s = poll_s
        self._partial = ""
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._follow, name="palm-tail", daemon=True)
        self._thread.start()

    def _read(self) -> bool:
        """Forward what was written since the last read; False when nothing was."""
        chunk = self._reader.read()
        if not chunk:
            return False
        text = self._partial + chunk
        *complete, self._partial = text.split("\n")
        for line in complete:
            self._lines.append(line)
            with contextlib.suppress(OSError, ValueError):
                sys.stderr.write(line + "\n")
        with contextlib.suppress(OSError, ValueError):
            sys.stderr.flush()
        return True

    def _follow(self) -> None:
        with contextlib.suppress(OSError, ValueError):
            while not self._stop.is_set():
                if not self._read():
                    self._stop.wait(self._poll_s)
            while self._read():
                pass

    def lines(self, wait_s: float = 1.0) -> list[str]:
        """The last lines, once what the child wrote so far was read (within ``wait_s``)."""
        deadline = time.monotonic() + wait_s
        while time.monotonic() < deadline:
            try:
                if self._reader.tell() >= self.path.stat().st_size:
                    break
            except (OSError, ValueError):
                break
            time.sleep(0.02)
        found = list(self._lines)
        return [*found, self._partial] if self._partial else found

    def close(self) -> None:
        """Stop following (after reading what is left) and close the files."""
        self._stop.set()
        self._thread.join(2.0)
        for handle in (self.sink, self._reader):
            with contextlib.suppress(OSError):
                handle.close()


# work directories --------------------------------------------------------------


def _create_time(pid: int) -> float | None:
    try:
        return float(psutil.Process(pid).create_time())
    except psutil.Error:
        return None


def claim_workdir(path: str | os.PathLike[str]) -> None:
    """Record in ``path`` that this process owns it (its PID and start time)."""
    info = {"pid": os.getpid(), "create_time": _create_time(os.getpid())}
    (Path(path) / OWNER_FILE).write_text(json.dumps(info))


def _owner_dead(path: Path) -> bool:
    try:
        info = json.loads((path / OWNER_FILE).read_text())
        pid, started = int(info["pid"]), info["create_time"]
    except (OSError, ValueError, KeyError, TypeError):
        return False  # no owner recorded (yet): leave it alone
    now = _create_time(pid)
    # gone, or its PID names a process started later (PID reuse)
    return now is None or (started is not None and abs(now - float(started)) > 1.0)


def remove_stale_workdirs(parent: str | os.PathLike[str], prefix: str) -> list[Path]:
    """Remove ``parent/prefix*`` directories whose owner (:func:`claim_workdir`) is dead.

    Only directories of this user with an owner file are considered; returns
    those removed.
    """
    removed: list[Path] = []
    with contextlib.suppress(OSError):
        for path in Path(parent).glob(f"{prefix}*"):
            with contextlib.suppress(OSError):
                if not path.is_dir() or path.is_symlink() or path.stat().st_uid != os.getuid():
                    continue
                if _owner_dead(path):
                    shutil.rmtree(path, ignore_errors=True)
                    removed.append(path)
                    log.info("removed %s, left by a process that died", path)
    return removed


# stopping ------------------------------------------------------------------------


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


#: The environment variable naming the pipe a worker process writes one byte to
#: once its class is imported and built (:func:`palm.ops.worker_process.say_started`):
#: a pool counts only exits before that as failures to start.
STARTED_FD_ENV = "PALM_STARTED_FD"


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
