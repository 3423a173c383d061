"""Prometheus metrics of the gateway.

Each app gets its own registry. Under gunicorn with several worker processes,
set ``PROMETHEUS_MULTIPROC_DIR`` (``palm.gateway.serve`` does) so ``/metrics``
merges the values every worker process wrote.

A value written in that mode costs a lock, a ``getpid()`` and a write to a
memory-mapped file (a histogram observation two of them and a scan of the
buckets): about 15 µs per request on the job route, as much as the rest of
the route. The event loop's requests are therefore tallied in plain Python
(:meth:`GatewayMetrics.tally`, :meth:`GatewayMetrics.tally_job`) and written
in one go by :meth:`GatewayMetrics.flush`, which the loop runs at the end of
the turn that answered them (so a burst of answers costs one write per
label set) and ``/metrics`` runs before it renders.
"""

from __future__ import annotations

import os
import threading
from bisect import bisect_left
from collections.abc import Iterator
from typing import Any

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Histogram,
    generate_latest,
)
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.registry import Collector

from palm.errors import StateError
from palm.state.counters import PERCENTILES, read_stats
from palm.state.store import State

__all__ = ["CONTENT_TYPE_LATEST", "GatewayMetrics"]

LATENCY_BUCKETS_S = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)


class GatewayMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "palm_gateway_requests",
            "HTTP requests answered by the gateway",
            ["route", "method", "status"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "palm_gateway_request_duration_seconds",
            "Time to answer an HTTP request",
            ["route"],
            buckets=LATENCY_BUCKETS_S,
            registry=self.registry,
        )
        self.jobs = Counter(
            "palm_gateway_jobs",
            "Jobs sent to palm services, by outcome",
            ["service", "outcome"],
            registry=self.registry,
        )

        self.palm: PalmCounters | None = None
        # labelled children by (route, method, status): labels() takes a lock each call
        self._children: dict[tuple[str, str, int], tuple[Any, Any]] = {}
        self._job_children: dict[tuple[str, str], Any] = {}
        # what tally() counted and flush() has not written yet: per (route, method,
        # status) [count, sum of seconds, one count per latency bucket]; jobs per
        # (service, outcome)
        self._bounds = (*LATENCY_BUCKETS_S, float("inf"))
        self._tallied: dict[tuple[str, str, int], list[float]] = {}
        self._jobs_tallied: dict[tuple[str, str], int] = {}
        self._lock = threading.Lock()

    def watch_palm(self, redis_url: str, cluster: str) -> None:
        """Show the counters palm servers publish to this Redis on ``/metrics`` too."""
        self.palm = PalmCounters(State(redis_url, cluster))

    def _request_children(self, key: tuple[str, str, int]) -> tuple[Any, Any]:
        children = self._children.get(key)
        if children is None:
            route, method, status = key
            children = (
                self.requests.labels(route, method, str(status)),
                self.latency.labels(route),
            )
            self._children[key] = children
        return children

    def _jobs_child(self, service: str, outcome: str) -> Any:
        child = self._job_children.get((service, outcome))
        if child is None:
            child = self._job_children[service, outcome] = self.jobs.labels(service, outcome)
        return child

    def observe(self, route: str, method: str, status: int, elapsed_s: float) -> None:
        """Count one answered request now."""
        counter, histogram = self._request_children((route, method, status))
        counter.inc()
        histogram.observe(elapsed_s)

    def tally(self, route: str, method: str, status: int, elapsed_s: float) -> None:
        """Count one answered request at the next :meth:`flush`."""
        with self._lock:
            self._tally_locked((route, method, status), elapsed_s)

    def _tally_locked(self, key: tuple[str, str, int], elapsed_s: float) -> None:
        """Add one request of ``key`` to the tally (the lock held)."""
        entry = self._tallied.get(key)
        if entry is None:
            entry = self._tallied[key] = [0.0] * (len(self._bounds) + 2)
        entry[0] += 1
        entry[1] += elapsed_s
        # the bucket observe() would pick: the first bound at or above the value
        entry[2 + bisect_left(self._bounds, elapsed_s)] += 1

    def tally_answer(
        self, route: str, method: str, status: int, elapsed_s: float, service: str, outcome: str
    ) -> None:
        """:meth:`tally` and :meth:`tally_job` for a job request, under one lock."""
        job = (service, outcome)
        with self._lock:
            self._tally_locked((route, method, status), elapsed_s)
            self._jobs_tallied[job] = self._jobs_tallied.get(job, 0) + 1

    def tally_job(self, service: str, outcome: str) -> None:
        """Count one job sent to ``service`` that ended with ``outcome``, at the next flush."""
        key = (service, outcome)
        with self._lock:
            self._jobs_tallied[key] = self._jobs_tallied.get(key, 0) + 1

    def flush(self) -> None:
        """Write what :meth:`tally` and :meth:`tally_job` counted to the metrics."""
        with self._lock:
            if not self._tallied and not self._jobs_tallied:
                return
            tallied, self._tallied = self._tallied, {}
            jobs, self._jobs_tallied = self._jobs_tallied, {}
        for key, entry in tallied.items():
            counter, histogram = self._request_children(key)
            counter.inc(entry[0])
            # what observe() does per value, once per bucket: the sum, then the counts
            histogram._sum.inc(entry[1])
            for bucket, count in zip(histogram._buckets, entry[2:], strict=True):
                if count:
                    bucket.inc(count)
        for (service, outcome), count in jobs.items():
            self._jobs_child(service, outcome).inc(count)

    def render(self) -> bytes:
        self.flush()
        if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
            merged = CollectorRegistry()
            MultiProcessCollector(merged)  # type: ignore[no-untyped-call]
            text = generate_latest(merged)
        else:
            text = generate_latest(self.registry)
        if self.palm is not None:
            palm = CollectorRegistry()
            palm.register(self.palm)
            text += generate_latest(palm)
        return text


class PalmCounters(Collector):
    """The palm servers' published counters (``palm stats``) as Prometheus metrics."""

    def __init__(self, state: State) -> None:
        self.state = state

    def collect(self) -> Iterator[Any]:
        try:
            stats = read_stats(self.state)
        except StateError:
            stats = {}
        labels = ["server", "function"]
        messages = {
            key: CounterMetricFamily(
                f"palm_messages_{key}", f"Jobs {text}, per server and function", labels=labels
            )
            for key, text in (("in", "received"), ("out", "answered"), ("failed", "failed"))
        }
        in_flight = GaugeMetricFamily("palm_jobs_in_flight", "Jobs being run", labels=labels)
        latency = GaugeMetricFamily(
            "palm_latency_seconds",
            "Job latency percentiles over the sliding window",
            labels=[*labels, "quantile"],
        )
        backlog = GaugeMetricFamily("palm_backlog", "Jobs waiting for a worker", labels=["server"])
        alive = GaugeMetricFamily(
            "palm_worker_alive", "1 while a worker heartbeats", labels=["server", "worker"]
        )
        done = CounterMetricFamily(
            "palm_worker_jobs_done", "Jobs a worker ran", labels=["server", "worker"]
        )
        busy = GaugeMetricFamily(
            "palm_worker_busy", "Job messages a worker holds now", labels=["server", "worker"]
        )
        for server, snap in sorted(stats.items()):
            backlog.add_metric([server], float(snap.get("backlog", 0)))
            for function, f in sorted(snap.get("functions", {}).items()):
                for key, family in messages.items():
                    family.add_metric([server, function], float(f.get(key, 0)))
                in_flight.add_metric([server, function], float(f.get("in_flight", 0)))
                for q in PERCENTILES:
                    value = f.get(f"p{q}_s")
                    if value is not None:
                        latency.add_metric([server, function, str(q / 100)], float(value))
            for worker, w in sorted(snap.get("workers", {}).items()):
                alive.add_metric([server, worker], 1.0 if w.get("alive") else 0.0)
                done.add_metric([server, worker], float(w.get("jobs_done", 0)))
                busy.add_metric([server, worker], float(w.get("busy", 0)))
        yield from messages.values()
        yield from (in_flight, latency, backlog, alive, done, busy)
