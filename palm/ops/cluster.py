"""A whole parallel cluster on this machine, for scripts, notebooks and tests.

::

    with LocalCluster(workers=2) as cluster:
        squares = cluster.map(lambda x: x * x, range(1000))

It starts a master and ``workers`` generic worker processes (plus any
``worker_class``) on loopback with OS-chosen ports and a fresh cluster
secret, and stops every process it started on exit. Its processes die with
the process that started them, even one killed with SIGKILL (on Linux).

The master and its workers start at once: they meet on IPC endpoints in a
private temporary directory (``addresses["worker_push"]`` and
``["worker_pull"]``, removed on stop) whose names are known before the master
binds them, so no worker waits for the master to come up first.

On Linux they are forked from this process (``start="fork"``, the default
there; :mod:`palm.ops.forking`) once the master's and the workers' modules are
imported here: no interpreter starts and nothing is imported per process, so
the cluster is ready in a fraction of a second. ``start="exec"`` (the default
elsewhere, or ``PALM_CLUSTER_START=exec``) runs each as a new ``python -m``
process instead.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterable
from typing import Any

from palm.call.parallel import ParallelClient
from palm.errors import ConfigError
from palm.ops.forking import ForkedProcess, can_fork, fork_main
from palm.ops.processes import (
    claim_workdir,
    popen,
    remove_stale_workdirs,
    terminate_all,
    worker_command,
)

__all__ = ["IPC_DIR_PREFIX", "LocalCluster", "read_ready"]

#: The temporary directory of a cluster's inner (worker) endpoints.
IPC_DIR_PREFIX = "palm-cluster-"


def read_lines(
    proc: subprocess.Popen[str], until: Callable[[str], bool], timeout_s: float
) -> list[str]:
    """Lines a child prints on stdout, up to and including the first ``until`` accepts.

    Reads the pipe's file descriptor directly: a buffered ``readline`` can
    leave lines in Python's buffer where waiting on the descriptor never sees
    them. Output after that line may be consumed and is dropped.
    """
    import selectors

    assert proc.stdout is not None
    fd = proc.stdout.fileno()
    lines: list[str] = []
    pending = b""
    sel = selectors.DefaultSelector()
    sel.register(fd, selectors.EVENT_READ)
    deadline = time.monotonic() + timeout_s
    try:
        while True:
            while b"\n" in pending:
                raw, pending = pending.split(b"\n", 1)
                line = raw.decode(errors="replace")
                lines.append(line)
                if until(line):
                    return lines
            left = deadline - time.monotonic()
            if left <= 0 or not sel.select(left):
                raise TimeoutError(f"process {proc.pid}: nothing awaited within {timeout_s} s")
            chunk = os.read(fd, 65536)
            if not chunk:
                raise RuntimeError(f"process {proc.pid} exited with {proc.wait()}: {lines}")
            pending += chunk
    finally:
        sel.close()


def _ready_event(line: str) -> dict[str, Any] | None:
    try:
        event = json.loads(line)
    except ValueError:
        return None
    return event if isinstance(event, dict) and event.get("event") == "ready" else None


def read_ready(proc: subprocess.Popen[str], timeout_s: float = 20.0) -> dict[str, Any]:
    """Wait for the JSON ``ready`` line a palm process prints on stdout."""
    try:
        lines = read_lines(proc, lambda line: _ready_event(line) is not None, timeout_s)
    except TimeoutError as exc:
        raise TimeoutError(f"process {proc.pid} did not report ready in {timeout_s} s") from exc
    event = _ready_event(lines[-1])
    assert event is not None
    return event


class LocalCluster:
    """A master and a pool of worker processes on 127.0.0.1."""

    def __init__(
        self,
        workers: int = 2,
        *,
        name: str = "palm",
        worker_class: str = "palm.serve.worker:FunctionWorker",
        secret: str | None = None,
        heartbeat_interval_s: float = 1.0,
        credit: int = 2,
        host: str = "127.0.0.1",
        env: dict[str, str] | None = None,
        start: str | None = None,
    ) -> None:
        if workers < 0:
            raise ConfigError("workers must be zero or more")
        start = start or os.environ.get("PALM_CLUSTER_START") or None
        if start is None:
            start = "fork" if can_fork() else "exec"
        if start not in ("fork", "exec"):
            raise ConfigError("start must be 'fork' or 'exec'")
        if start == "fork" and not can_fork():
            raise ConfigError("start='fork' needs Linux; use start='exec'")
        #: how processes start: forked from this one, or new interpreters
        self.start_method = start
        self.name = name
        self.worker_count = workers
        self.worker_class = worker_class
        self.secret = secret or secrets.token_hex(16)
        self.heartbeat_interval_s = heartbeat_interval_s
        self.credit = credit
        self.host = host
        self.env = dict(os.environ, PALM_SECRET=self.secret, **(env or {}))
        self.master: subprocess.Popen[str] | None = None
        self.workers: list[subprocess.Popen[bytes]] = []
        self.addresses: dict[str, str] = {}
        self._clients: list[ParallelClient] = []
        self._ipc_dir: str | None = None

    # lifecycle ---------------------------------------------------------------

    def start(self) -> LocalCluster:
        any_port = f"tcp://{self.host}:*"
        # a cluster whose script was SIGKILLed left its directory: the next one removes it
        remove_stale_workdirs(tempfile.gettempdir(), IPC_DIR_PREFIX)
        self._ipc_dir = tempfile.mkdtemp(prefix=IPC_DIR_PREFIX)
        claim_workdir(self._ipc_dir)
        inner = {
            "worker_push": f"ipc://{self._ipc_dir}/worker-push",
            "worker_pull": f"ipc://{self._ipc_dir}/worker-pull",
        }
        cmd = [
            sys.executable,
            "-m",
            "palm",
            "--log-level",
            "WARNING",
            "master",
            "--name",
            self.name,
        ]
        for flag in ("--pull", "--push", "--db"):
            cmd += [flag, any_port]
        cmd += ["--worker-pull", inner["worker_pull"], "--worker-push", inner["worker_push"]]
        cmd += ["--heartbeat-interval-s", str(self.heartbeat_interval_s)]
        try:
            # a script's cluster has nothing to hand over once the script is gone
            if self.start_method == "fork":
                self.master = self._fork_master(cmd[3:])
            else:
                self.master = popen(
                    cmd,
                    stdout=subprocess.PIPE,
                    text=True,
                    env=self.env,
                    death_signal=signal.SIGKILL,
                )
            self.addresses = dict(inner)
            for _ in range(self.worker_count):  # while the master starts
                self.add_worker()
            ready = read_ready(self.master)
            self.addresses = {k: v for k, v in ready.items() if isinstance(v, str) and "://" in v}
        except BaseException:
            self.stop()
            raise
        return self

    def add_worker(self, worker_class: str | None = None) -> subprocess.Popen[bytes]:
        """Start one more worker process; returns it (its ``pid`` is the worker's)."""
        index = len(self.workers)
        cmd = worker_command(
            worker_class or self.worker_class,
            f"{self.name}-w{index}",
            push=self.addresses["worker_push"],
            pull=self.addresses["worker_pull"],
            credit=self.credit,
            heartbeat_interval_s=self.heartbeat_interval_s,
            log_level="WARNING",
        )
        proc: subprocess.Popen[bytes]
        if self.start_method == "fork":
            from palm.ops import worker_process
            from palm.ops.loading import load_object

            load_object(worker_class or self.worker_class)  # imported once, here
            pid = fork_main(worker_process.main, cmd[3:], env=self.env, death_signal=signal.SIGKILL)
            proc = ForkedProcess(pid, cmd)
        else:
            proc = popen(cmd, env=self.env, death_signal=signal.SIGKILL)
        self.workers.append(proc)
        return proc

    def _fork_master(self, argv: list[str]) -> subprocess.Popen[str]:
        """The master forked from this process, its stdout a pipe read here."""
        import palm.serve.master  # noqa: F401  imported once, here, not in the fork

        if not self.env.get("PALM_NO_REDIS"):
            # the Redis client every process opens in the background: loaded once, here
            # (in each process, its import would hold the GIL through the first map)
            import redis  # noqa: F401

        read_fd, write_fd = os.pipe()
        try:
            pid = fork_main(
                _master_main, argv, env=self.env, death_signal=signal.SIGKILL, stdout=write_fd
            )
        except BaseException:
            os.close(read_fd)
            raise
        finally:
            os.close(write_fd)
        return ForkedProcess(pid, argv, os.fdopen(read_fd, "r"))

    def wait_for_workers(self, count: int | None = None, timeout_s: float = 20.0) -> None:
        """Block until the master knows ``count`` workers (default: all started)."""
        from palm.call.request import Client
        from palm.wire.info import ServiceInfo

        want = len([w for w in self.workers if w.poll() is None]) if count is None else count
        probe = Client(self.addresses["db"], self.name, timeout_s=2.0)
        deadline = time.monotonic() + timeout_s
        try:
            while time.monotonic() < deadline:
                if len(ServiceInfo.from_wire(probe.info()).workers) >= want:
                    return
                time.sleep(0.002)  # a worker registers within milliseconds of its start
        finally:
            probe.close()
        raise TimeoutError(f"the master did not see {want} workers within {timeout_s} s")

    def stop(self) -> None:
        """Stop every process this cluster started (SIGTERM, then SIGKILL)."""
        for client in self._clients:
            client.close()
        self._clients.clear()
        procs: list[subprocess.Popen[Any]] = [*self.workers]
        if self.master is not None:
            procs.append(self.master)
        terminate_all(procs, grace_s=5.0)
        if self.master is not None and self.master.stdout is not None:
            self.master.stdout.close()
        self.workers.clear()
        self.master = None
        if self._ipc_dir is not None:
            shutil.rmtree(self._ipc_dir, ignore_errors=True)
            self._ipc_dir = None

    def __enter__(self) -> LocalCluster:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # use ---------------------------------------------------------------------

    def client(self, **options: Any) -> ParallelClient:
        """A new ParallelClient of this cluster's master (closed on stop)."""
        client = ParallelClient(
            self.addresses["push"],
            self.addresses["pull"],
            self.addresses["db"],
            self.name,
            secret=self.secret,
            **options,
        )
        self._clients.append(client)
        return client

    def map(self, fn: Callable[[Any], Any], iterable: Iterable[Any], **options: Any) -> list[Any]:
        """``[fn(x) for x in iterable]`` on the cluster's workers."""
        if not self._clients:
            self.client()
        return self._clients[0].map(fn, iterable, **options)


def _master_main(argv: list[str]) -> int:
    """``palm --log-level L master ...`` for a forked master: the options LocalCluster
    passes, and the master that command runs (the CLI's other commands stay unloaded)."""
    import argparse
    import logging

    from palm.ops.loading import announce
    from palm.serve.master import Master

    parser = argparse.ArgumentParser(prog="palm")
    parser.add_argument("--log-level", default="INFO")
    parser.add_argument("command", choices=["master"])
    for flag in ("--name", "--pull", "--push", "--db", "--worker-pull", "--worker-push"):
        parser.add_argument(flag, required=flag != "--db")
    parser.add_argument("--heartbeat-interval-s", type=float, default=1.0)
    args = parser.parse_args(argv)
    level = getattr(logging, args.log_level)
    logging.basicConfig(
        level=level,
        format="%(asctime)s %(levelname)s %(name)s[%(process)d]: %(message)s",
        stream=sys.stderr,
    )
    for handler in logging.getLogger().handlers:
        handler.setLevel(level)
    master = Master(
        args.name,
        args.pull,
        args.push,
        args.worker_pull,
        args.worker_push,
        args.db,
        heartbeat_interval_s=args.heartbeat_interval_s,
        keys=os.environ.get("PALM_KEYS") or False,
    )
    master.on_ready = lambda m: announce("ready", kind="master", name=m.name, **m.bound)
    master.start()
    return 0
