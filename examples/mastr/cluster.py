"""A whole mastr deployment on this machine, every part a real process on loopback.

``LocalMastr(workers=2, shards=2)`` starts a redis-server (palm's
:class:`~palm.state.embedded.EmbeddedRedis`, unless given a URL), the valuation
master (``palm master``) with ``workers`` valuation workers, and for each
aggregation shard a master with exactly one aggregation worker. The workers
run in :class:`palm.workers.pool.WorkerPool` pools, which a supervisor thread
checks: a worker that dies is started again, so a killed aggregation worker is
replaced and its shard carries on from its state in Redis.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from examples.mastr.client import Deployment, MasterAddresses
from examples.mastr.service import (
    AGGREGATION_WORKER,
    VALUATION_MASTER,
    VALUATION_WORKER,
    shard_master,
)
from palm.ops.cluster import read_ready
from palm.ops.processes import terminate_all
from palm.state.embedded import EmbeddedRedis
from palm.state.store import REDIS_URL_ENV
from palm.workers.pool import WorkerPool

__all__ = ["LocalMastr"]
_ROOT = Path(__file__).resolve().parents[2]
_ANY_PORT = "tcp://127.0.0.1:*"


def _env(extra: dict[str, str]) -> dict[str, str]:
    env = dict(os.environ, **extra)
    path = env.get("PYTHONPATH", "")
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(_ROOT), path) if p)
    return env


class LocalMastr:
    def __init__(
        self,
        workers: int = 2,
        shards: int = 2,
        redis_url: str | None = None,
        cluster: str = "default",
        heartbeat_interval_s: float = 1.0,
        ready_timeout_s: float = 30.0,
    ) -> None:
        self.workers = workers
        self.shards = shards
        self.cluster = cluster
        self.heartbeat_interval_s = heartbeat_interval_s
        self.ready_timeout_s = ready_timeout_s
        self._redis_url = redis_url
        self._redis: EmbeddedRedis | None = None
        self._redis_dir: str | None = None
        self.masters: list[subprocess.Popen[str]] = []
        self.pools: dict[str, WorkerPool] = {}
        self.deployment: Deployment | None = None
        self._stopping = threading.Event()
        self._supervisor = threading.Thread(target=self._supervise, daemon=True)

    # lifecycle -------------------------------------------------------------------

    def start(self) -> Deployment:
        try:
            return self._start()
        except BaseException:
            self.stop()
            raise

    def _start(self) -> Deployment:
        if self._redis_url is None:
            self._redis_dir = tempfile.mkdtemp(prefix="mastr-", dir="/tmp")
            self._redis = EmbeddedRedis(self._redis_dir, self.cluster)
            self._redis_url = self._redis.start()
        names = [VALUATION_MASTER, *(shard_master(i) for i in range(self.shards))]
        procs = [self._spawn_master(name) for name in names]  # they start side by side
        valuation, *shards = (
            MasterAddresses.from_ready(read_ready(proc, self.ready_timeout_s)) for proc in procs
        )
        self.deployment = Deployment(valuation, tuple(shards), self._redis_url, self.cluster)
        self._pool("value-worker", VALUATION_WORKER, valuation, self.workers)
        for i, master in enumerate(shards):
            self._pool(f"agg-worker-{i}", AGGREGATION_WORKER, master, 1)
        self._wait_ready()
        self._supervisor.start()
        return self.deployment

    def stop(self) -> None:
        self._stopping.set()
        if self._supervisor.is_alive():
            self._supervisor.join(timeout=5)
        for pool in self.pools.values():
            pool.stop()
        terminate_all(self.masters, grace_s=5.0)
        for proc in self.masters:
            if proc.stdout is not None:
                proc.stdout.close()
        if self._redis is not None:
            self._redis.stop()
            self._redis = None
        if self._redis_dir is not None:
            shutil.rmtree(self._redis_dir, ignore_errors=True)
            self._redis_dir = None

    def __enter__(self) -> LocalMastr:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # processes ------------------------------------------------------------------

    def _spawn_master(self, name: str) -> subprocess.Popen[str]:
        cmd = [sys.executable, "-m", "palm", "--log-level", "WARNING", "master", "--name", name]
        for flag in ("--pull", "--push", "--worker-pull", "--worker-push", "--db"):
            cmd += [flag, _ANY_PORT]
        cmd += ["--heartbeat-interval-s", str(self.heartbeat_interval_s)]
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True, env=_env({}), cwd=_ROOT)
        self.masters.append(proc)
        return proc

    def _pool(self, role: str, spec: str, master: MasterAddresses, processes: int) -> None:
        assert self._redis_url is not None
        pool = WorkerPool(
            spec,
            processes=processes,
            name=role,
            push_address=master.worker_push,
            pull_address=master.worker_pull,
            heartbeat_interval_s=self.heartbeat_interval_s,
            initial_backoff_s=0.05,
            env=_env({REDIS_URL_ENV: self._redis_url}),
            log_level="WARNING",
        )
        self.pools[role] = pool
        pool.start()

    def _wait_ready(self) -> None:
        """Handshake: every master answers a ``ping`` through one of its workers."""
        assert self.deployment is not None
        for master in (self.deployment.valuation, *self.deployment.shards):
            with master.client(timeout_s=self.ready_timeout_s) as client:
                answers = list(client.job("ping", [b"ping"], messages=1))
            if answers != [b"pong"]:
                raise RuntimeError(f"{master.name} answered {answers!r} to ping")

    def _supervise(self) -> None:
        while not self._stopping.wait(0.05):
            for pool in self.pools.values():
                pool.check()

    def pids(self, role: str) -> list[int]:
        """PIDs of the live workers of ``role`` ('value-worker', 'agg-worker-0', ...)."""
        return self.pools[role].pids

    def restarts(self, role: str) -> int:
        return sum(slot.restarts for slot in self.pools[role].slots)

    def wait_for_restart(self, role: str, timeout_s: float = 20.0) -> None:
        deadline = time.monotonic() + timeout_s
        while self.restarts(role) == 0:
            if time.monotonic() > deadline:
                raise TimeoutError(f"no {role} restarted within {timeout_s} s")
            time.sleep(0.02)
