"""Processes: free loopback ports, counting a process tree, peak RSS, starting and stopping.

Every process started here is stopped by its PID (SIGTERM, then SIGKILL after a grace
period); nothing is ever killed by name.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
from collections.abc import Sequence

import psutil

from benchmarks.timing import Sampler

STOP_GRACE_S = 5.0


def free_port() -> int:
    """A port on 127.0.0.1 free right now: palm's :func:`palm.ops.ports.free_port`
    (below the ephemeral range, never the same twice in a process); where palm
    cannot be imported (the pylm environment), one the OS picks."""
    try:
        from palm.ops.ports import free_port as palm_free_port
    except ImportError:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            sock.bind(("127.0.0.1", 0))
            return int(sock.getsockname()[1])
    return palm_free_port()


def free_tcp_address() -> str:
    """A ``tcp://127.0.0.1:PORT`` endpoint on a port :func:`free_port` found free."""
    return f"tcp://127.0.0.1:{free_port()}"


#: Idle bookkeeping processes that are not part of the system under test.
NOT_COUNTED = ("multiprocessing.resource_tracker", "multiprocessing.forkserver")


def _counts(proc: psutil.Process) -> bool:
    try:
        if proc.status() == psutil.STATUS_ZOMBIE:
            return False
        cmdline = " ".join(proc.cmdline())
    except psutil.Error:
        return False
    return not any(name in cmdline for name in NOT_COUNTED)


def tree_size(root_pid: int | None = None) -> int:
    """Live processes in the tree rooted at ``root_pid`` (default: this one), itself included.

    multiprocessing's resource tracker and fork server are left out: they idle.
    """
    root = psutil.Process(root_pid if root_pid is not None else os.getpid())
    return 1 + sum(1 for proc in root.children(recursive=True) if _counts(proc))


def spawn(
    argv: Sequence[str], env: dict[str, str] | None = None, cwd: str | None = None
) -> subprocess.Popen[bytes]:
    """Start a helper process in its own session, output discarded."""
    return subprocess.Popen(
        list(argv),
        env=env,
        cwd=cwd,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )


def stop_pid(pid: int, grace_s: float = STOP_GRACE_S) -> None:
    """SIGTERM ``pid`` and its descendants, SIGKILL whatever is left after ``grace_s``."""
    try:
        root = psutil.Process(pid)
    except psutil.NoSuchProcess:
        return
    family = [*root.children(recursive=True), root]
    for proc in family:
        with contextlib.suppress(psutil.NoSuchProcess):
            proc.send_signal(signal.SIGTERM)
    _, alive = psutil.wait_procs(family, timeout=grace_s)
    for proc in alive:
        with contextlib.suppress(psutil.NoSuchProcess):
            proc.kill()
    psutil.wait_procs(alive, timeout=grace_s)


def stop(proc: subprocess.Popen[bytes]) -> None:
    stop_pid(proc.pid)
    try:
        proc.wait(timeout=STOP_GRACE_S)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


class RssPoller(Sampler):
    """Polls the resident set size of some PIDs in a thread and keeps each peak (bytes)."""

    def __init__(self, pids: dict[str, int], interval_s: float = 0.05) -> None:
        super().__init__(interval_s)
        self._procs = {name: psutil.Process(pid) for name, pid in pids.items()}
        self.peak_bytes = dict.fromkeys(pids, 0)

    def sample(self) -> None:
        for name, proc in self._procs.items():
            try:
                rss = proc.memory_info().rss
            except psutil.Error:
                continue
            self.peak_bytes[name] = max(self.peak_bytes[name], rss)
