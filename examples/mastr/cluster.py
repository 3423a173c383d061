"""A whole mastr deployment on this machine, every part a real process on loopback.

``LocalMastr(workers=2, shards=2)`` starts a redis-server (unless given a
URL), the valuation master with ``workers`` valuation workers, and for each
aggregation shard a master with one aggregation worker. A supervisor thread
restarts any worker process that dies, so a killed aggregation worker is
replaced and its shard carries on from the state in Redis.
"""

from __future__ import annotations

import subprocess
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from examples.mastr.client import Deployment, MasterAddresses
from examples.mastr.processes import RedisProcess, spawn, stop

__all__ = ["LocalMastr", "Node"]


@dataclass
class Node:
    """One supervised process: its role, its arguments and the current process."""

    role: str
    args: list[str]
    proc: subprocess.Popen[bytes]
    restarts: int = 0

    @property
    def pid(self) -> int:
        return self.proc.pid


class LocalMastr:
    def __init__(
        self,
        workers: int = 2,
        shards: int = 2,
        redis_url: str | None = None,
        cluster: str = "default",
        log_dir: str | None = None,
        ready_timeout_s: float = 30.0,
    ) -> None:
        self.workers = workers
        self.shards = shards
        self.cluster = cluster
        self.ready_timeout_s = ready_timeout_s
        self._redis_url = redis_url
        self._redis: RedisProcess | None = None
        self._tmp = tempfile.TemporaryDirectory(prefix="mastr-logs-") if log_dir is None else None
        self.log_dir = Path(log_dir or self._tmp.name)  # type: ignore[union-attr]
        self.nodes: list[Node] = []
        self.deployment: Deployment | None = None
        self._stopping = threading.Event()
        self._supervisor = threading.Thread(target=self._supervise, daemon=True)
        self._lock = threading.Lock()

    # -- lifecycle -----------------------------------------------------------------

    def start(self) -> Deployment:
        try:
            return self._start()
        except BaseException:
            self.stop()
            raise

    def _start(self) -> Deployment:
        if self._redis_url is None:
            self._redis = RedisProcess()
            self._redis_url = self._redis.start()
        valuation = MasterAddresses.on_loopback("mastr-value")
        shards = tuple(MasterAddresses.on_loopback(f"mastr-agg-{i}") for i in range(self.shards))
        self.deployment = Deployment(valuation, shards, self._redis_url, self.cluster)
        for master in (valuation, *shards):
            self._spawn("master", self._master_args(master))
        for i in range(self.workers):
            self._spawn("value-worker", self._worker_args("value-worker", valuation, f"value-{i}"))
        for i, master in enumerate(shards):
            args = self._worker_args("agg-worker", master, f"agg-{i}")
            self._spawn(f"agg-worker-{i}", [*args, "--shard", str(i), "--shards", str(self.shards)])
        self._wait_ready()
        self._supervisor.start()
        return self.deployment

    def stop(self) -> None:
        self._stopping.set()
        if self._supervisor.is_alive():
            self._supervisor.join(timeout=5)
        with self._lock:
            for node in reversed(self.nodes):
                stop(node.proc)
        if self._redis is not None:
            self._redis.stop()
        if self._tmp is not None:
            self._tmp.cleanup()
            self._tmp = None

    def __enter__(self) -> LocalMastr:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- processes ------------------------------------------------------------------

    def _master_args(self, m: MasterAddresses) -> list[str]:
        return [
            "examples.mastr.node",
            "master",
            *("--name", m.name, "--pull", m.pull, "--push", m.push),
            *("--worker-pull", m.worker_pull, "--worker-push", m.worker_push, "--db", m.db),
        ]

    def _worker_args(self, role: str, m: MasterAddresses, name: str) -> list[str]:
        assert self._redis_url is not None
        return [
            "examples.mastr.node",
            role,
            *("--name", name, "--push", m.worker_pull, "--pull", m.worker_push, "--db", m.db),
            *("--redis", self._redis_url, "--cluster", self.cluster),
        ]

    def _spawn(self, role: str, args: list[str]) -> Node:
        log = self.log_dir / f"{role}-{len(self.nodes)}.log"
        node = Node(role, args, spawn(args, log))
        self.nodes.append(node)
        return node

    def _wait_ready(self) -> None:
        """Handshake: every master answers a ``ping`` through one of its workers."""
        assert self.deployment is not None
        deadline = time.monotonic() + self.ready_timeout_s
        for master in (self.deployment.valuation, *self.deployment.shards):
            while True:
                dead = [n for n in self.nodes if n.proc.poll() is not None]
                if dead:
                    raise RuntimeError(f"{dead[0].role} exited early; logs in {self.log_dir}")
                try:
                    if list(master.client().job("ping", [b"ping"], messages=1)) == [b"pong"]:
                        break
                except Exception:
                    if time.monotonic() > deadline:
                        raise
                if time.monotonic() > deadline:
                    raise RuntimeError(f"{master.name} not ready after {self.ready_timeout_s} s")
                time.sleep(0.05)

    def _supervise(self) -> None:
        while not self._stopping.wait(0.1):
            with self._lock:
                for node in self.nodes:
                    if node.role != "master" and node.proc.poll() is not None:
                        node.proc = spawn(node.args, self.log_dir / f"{node.role}-restart.log")
                        node.restarts += 1

    def pids(self, role: str) -> list[int]:
        """PIDs of the live processes of ``role`` ('master', 'value-worker', 'agg-worker-0'...)."""
        with self._lock:
            return [n.pid for n in self.nodes if n.role == role and n.proc.poll() is None]

    def restarts(self, role: str) -> int:
        return sum(n.restarts for n in self.nodes if n.role == role)
