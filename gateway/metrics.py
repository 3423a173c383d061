"""Prometheus metrics of the gateway.

Each app gets its own registry. Under gunicorn with several worker processes,
set ``PROMETHEUS_MULTIPROC_DIR`` (``gateway.serve`` does) so ``/metrics``
merges the values every worker process wrote.
"""

from __future__ import annotations

import os

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Histogram,
    generate_latest,
)
from prometheus_client.multiprocess import MultiProcessCollector

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

    def observe(self, route: str, method: str, status: int, elapsed_s: float) -> None:
        self.requests.labels(route, method, str(status)).inc()
        self.latency.labels(route).observe(elapsed_s)

    def render(self) -> bytes:
        if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
            merged = CollectorRegistry()
            MultiProcessCollector(merged)  # type: ignore[no-untyped-call]
            return generate_latest(merged)
        return generate_latest(self.registry)
