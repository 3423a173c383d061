"""Performance counters: what each server did, kept in process and published to Redis.

:class:`Counters` is cheap to update from any thread: per function it counts
messages in, out and failed, the jobs in flight, and keeps the latencies of a
sliding window (the last ``window_s`` seconds, at most ``max_samples`` samples)
for the p50 / p95 / p99 percentiles; per server a backlog gauge; per worker
its liveness, jobs done, the jobs it holds now (``busy``), its host and pid,
and when it was last seen.

:class:`CounterPublisher` writes :meth:`Counters.snapshot` as JSON to
``palm:<cluster>:stats:<server>`` every ``interval_s`` with a TTL of a few
intervals, so a server that stops disappears from the stats. A Redis outage
costs nothing but a warning: the next snapshot holds every count.
:func:`read_stats` reads them back; ``palm stats`` prints them.
"""

from __future__ import annotations

import json
import math
import os
import socket
import sys
import threading
import time
from collections import deque
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from palm.state.store import State

__all__ = [
    "PERCENTILES",
    "CounterPublisher",
    "Counters",
    "LatencyWindow",
    "percentile",
    "read_stats",
]

PERCENTILES = (50, 95, 99)


def percentile(sorted_values: Sequence[float], q: float) -> float:
    """The ``q``-th percentile (0 < q <= 100) of ascending values, nearest-rank method.

    The smallest value such that at least ``q`` percent of the values are less
    than or equal to it. 0.0 for no values.
    """
    if not 0 < q <= 100:
        raise ValueError(f"percentile {q} is not in (0, 100]")
    if not sorted_values:
        return 0.0
    rank = math.ceil(q / 100 * len(sorted_values))
    return float(sorted_values[max(rank, 1) - 1])


class LatencyWindow:
    """Latency samples of the last ``window_s`` seconds, at most ``max_samples`` of them."""

    def __init__(self, window_s: float = 60.0, max_samples: int = 4096) -> None:
        self.window_s = window_s
        self._samples: deque[tuple[float, float]] = deque(maxlen=max_samples)

    def add(self, latency_s: float, now: float | None = None) -> None:
        self._samples.append((time.monotonic() if now is None else now, latency_s))

    def _prune(self, now: float) -> None:
        horizon = now - self.window_s
        while self._samples and self._samples[0][0] < horizon:
            self._samples.popleft()

    def __len__(self) -> int:
        return len(self._samples)

    def percentiles(
        self, qs: Sequence[float] = PERCENTILES, now: float | None = None
    ) -> dict[float, float]:
        """``{q: latency_s}`` over the samples still inside the window."""
        self._prune(time.monotonic() if now is None else now)
        values = sorted(latency for _, latency in self._samples)
        return {q: percentile(values, q) for q in qs}


@dataclass
class _FunctionCounts:
    window: LatencyWindow
    messages_in: int = 0
    messages_out: int = 0
    failed: int = 0
    in_flight: int = 0


@dataclass
class _WorkerState:
    alive: bool
    jobs_done: int
    last_seen: float
    host: str = ""
    pid: int = 0
    busy: int = 0


@dataclass
class _Totals:
    functions: dict[str, _FunctionCounts] = field(default_factory=dict)
    workers: dict[str, _WorkerState] = field(default_factory=dict)
    backlog: int = 0


class Counters:
    """In-process performance counters of one server; every method is thread-safe.

    Record a job with :meth:`job_started` / :meth:`job_finished` (or the
    :meth:`track` context manager), or with :meth:`record` when the latency is
    already known.
    """

    def __init__(self, server: str, *, window_s: float = 60.0, max_samples: int = 4096) -> None:
        self.server = server
        self.window_s = window_s
        self.max_samples = max_samples
        self.started_at = time.time()
        self._lock = threading.Lock()
        self._totals = _Totals()

    def _function(self, function: str) -> _FunctionCounts:
        counts = self._totals.functions.get(function)
        if counts is None:
            counts = _FunctionCounts(LatencyWindow(self.window_s, self.max_samples))
            self._totals.functions[function] = counts
        return counts

    def job_started(self, function: str) -> float:
        """Count a message in; returns the start time to hand to :meth:`job_finished`."""
        with self._lock:
            counts = self._function(function)
            counts.messages_in += 1
            counts.in_flight += 1
        return time.monotonic()

    def job_finished(self, function: str, started: float, ok: bool = True) -> None:
        """Count a reply out (or a failure) of a job begun with :meth:`job_started`."""
        now = time.monotonic()
        with self._lock:
            counts = self._function(function)
            counts.in_flight = max(0, counts.in_flight - 1)
            if ok:
                counts.messages_out += 1
            else:
                counts.failed += 1
            counts.window.add(now - started, now)

    def record(self, function: str, latency_s: float, ok: bool = True) -> None:
        """Count one whole job (in and out, or failed) that took ``latency_s``."""
        now = time.monotonic()
        with self._lock:
            counts = self._function(function)
            counts.messages_in += 1
            if ok:
                counts.messages_out += 1
            else:
                counts.failed += 1
            counts.window.add(latency_s, now)

    def record_batch(self, function: str, latency_s: float, count: int, failed: int = 0) -> None:
        """Count ``count`` jobs handled together in ``latency_s``, ``failed`` of them failed."""
        now = time.monotonic()
        with self._lock:
            counts = self._function(function)
            counts.messages_in += count
            counts.messages_out += count - failed
            counts.failed += failed
            counts.window.add(latency_s, now)

    @contextmanager
    def track(self, function: str) -> Iterator[None]:
        """Count the job run inside the block; an exception counts it as failed."""
        started = self.job_started(function)
        try:
            yield
        except BaseException:
            self.job_finished(function, started, ok=False)
            raise
        self.job_finished(function, started, ok=True)

    def set_backlog(self, jobs: int) -> None:
        """Set the gauge of jobs waiting for a worker."""
        with self._lock:
            self._totals.backlog = jobs

    def worker_seen(
        self,
        worker_id: str,
        jobs_done: int,
        alive: bool = True,
        *,
        host: str = "",
        pid: int = 0,
        busy: int = 0,
    ) -> None:
        """Note a sign of life (or death, ``alive=False``) from a worker: where it
        runs and how many jobs it holds now (``busy``)."""
        with self._lock:
            self._totals.workers[worker_id] = _WorkerState(
                alive, jobs_done, time.time(), host, pid, busy
            )

    def worker_lost(self, worker_id: str) -> None:
        """Mark a worker dead, keeping its last counts."""
        with self._lock:
            worker = self._totals.workers.get(worker_id)
            if worker is not None:
                worker.alive = False
                worker.busy = 0

    def forget_worker(self, worker_id: str) -> None:
        with self._lock:
            self._totals.workers.pop(worker_id, None)

    def snapshot(self) -> dict[str, Any]:
        """A JSON-ready picture of every counter; latencies are in seconds."""
        now = time.monotonic()
        with self._lock:
            functions: dict[str, Any] = {}
            for name, counts in self._totals.functions.items():
                pcts = counts.window.percentiles(PERCENTILES, now)
                functions[name] = {
                    "in": counts.messages_in,
                    "out": counts.messages_out,
                    "failed": counts.failed,
                    "in_flight": counts.in_flight,
                    "samples": len(counts.window),
                    **{f"p{q}_s": pcts[q] for q in PERCENTILES},
                }
            workers = {
                worker_id: {
                    "alive": w.alive,
                    "jobs_done": w.jobs_done,
                    "last_seen": w.last_seen,
                    "host": w.host,
                    "pid": w.pid,
                    "busy": w.busy,
                }
                for worker_id, w in self._totals.workers.items()
            }
            backlog = self._totals.backlog
        return {
            "server": self.server,
            "host": socket.gethostname(),
            "pid": os.getpid(),
            "time": time.time(),
            "started_at": self.started_at,
            "window_s": self.window_s,
            "backlog": backlog,
            "in": sum(f["in"] for f in functions.values()),
            "out": sum(f["out"] for f in functions.values()),
            "failed": sum(f["failed"] for f in functions.values()),
            "in_flight": sum(f["in_flight"] for f in functions.values()),
            "functions": functions,
            "workers": workers,
        }


def _stats_key(state: State, server: str) -> str:
    return state.key("stats", server)


class CounterPublisher:
    """A daemon thread writing a Counters snapshot to Redis every ``interval_s``.

    The key ``palm:<cluster>:stats:<server>`` expires after ``ttl_s`` (three
    intervals by default, at least 2 s). Redis errors are reported once on
    stderr and retried at the next interval.
    """

    def __init__(
        self,
        state: State,
        counters: Counters,
        interval_s: float = 1.0,
        *,
        ttl_s: float | None = None,
    ) -> None:
        self.state = state
        self.counters = counters
        self.interval_s = interval_s
        self.ttl_s = ttl_s if ttl_s is not None else max(2.0, 3 * interval_s)
        self.published = 0
        self.failures = 0
        self._stop = threading.Event()
        self._redis_down = False
        self._thread: threading.Thread | None = None

    def publish(self) -> bool:
        """Write one snapshot now; True if Redis took it."""
        import redis  # loaded on first use (see palm.state.embedded)

        payload = json.dumps(self.counters.snapshot())
        try:
            self.state.client.set(
                _stats_key(self.state, self.counters.server),
                payload,
                px=max(1, int(self.ttl_s * 1000)),
            )
        except (redis.RedisError, OSError) as exc:
            self.failures += 1
            if not self._redis_down:
                self._redis_down = True
                _warn(f"Redis at {self.state.url} unreachable ({exc}); stats not published")
            return False
        if self._redis_down:
            self._redis_down = False
            _warn(f"Redis at {self.state.url} is back; publishing stats again")
        self.published += 1
        return True

    def _run(self) -> None:
        while not self._stop.is_set():
            self.publish()
            self._stop.wait(self.interval_s)

    def start(self) -> CounterPublisher:
        if self._thread is None:
            self._thread = threading.Thread(
                target=self._run, name=f"palm-stats-{self.counters.server}", daemon=True
            )
            self._thread.start()
        return self

    def stop(self, timeout_s: float = 2.0) -> None:
        """Stop the thread after one last snapshot."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout_s)
            self._thread = None
            self.publish()

    def __enter__(self) -> CounterPublisher:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _warn(message: str) -> None:
    try:
        sys.stderr.write(f"palm.state.counters: {message}\n")
        sys.stderr.flush()
    except (OSError, ValueError):
        pass


def read_stats(state: State) -> dict[str, dict[str, Any]]:
    """The latest published snapshot of every live server, by server name."""
    pattern = _stats_key(state, "*")
    stats: dict[str, dict[str, Any]] = {}
    with state.translate("reading stats"):
        keys = sorted(state.client.scan_iter(match=pattern, count=500))
        values: Any = state.client.mget(keys) if keys else []
    for raw in values:
        if raw is None:
            continue  # expired between SCAN and MGET
        try:
            snapshot = json.loads(raw)
        except ValueError:
            continue
        if isinstance(snapshot, dict) and isinstance(snapshot.get("server"), str):
            stats[snapshot["server"]] = snapshot
    return stats
