"""The gateway's metrics: requests tallied on the event loop and written in one go give
the same Prometheus text as requests observed one by one."""

from __future__ import annotations

import math

from prometheus_client import generate_latest

from palm.gateway.metrics import LATENCY_BUCKETS_S, GatewayMetrics

RULE = "/<service>/<function>"
# on, between and past the buckets' bounds (a value equal to a bound is in its bucket)
ELAPSED_S = [0.0, 0.0004, 0.001, 0.0011, 0.003, 0.003, 0.05, 0.7, 29.0, 31.0, 1000.0]


def text(metrics: GatewayMetrics) -> str:
    lines = generate_latest(metrics.registry).decode().splitlines()
    return "\n".join(line for line in lines if "_created" not in line)


def test_tallied_requests_render_as_observed_ones() -> None:
    observed, tallied = GatewayMetrics(), GatewayMetrics()
    for i, elapsed_s in enumerate(ELAPSED_S):
        status = 200 if i % 3 else 502
        observed.observe(RULE, "POST", status, elapsed_s)
        tallied.tally(RULE, "POST", status, elapsed_s)
    observed.jobs.labels("demo", "ok").inc(2)
    observed.jobs.labels("demo", "RemoteError").inc()
    for outcome in ("ok", "RemoteError", "ok"):
        tallied.tally_job("demo", outcome)
    assert text(tallied) != text(observed)  # nothing written before the flush
    tallied.flush()
    assert text(tallied) == text(observed)
    assert f'le="{LATENCY_BUCKETS_S[0]}"' in text(tallied)


def test_a_flush_writes_each_tally_once() -> None:
    metrics = GatewayMetrics()
    metrics.tally(RULE, "POST", 200, 0.002)
    metrics.flush()
    metrics.flush()
    metrics.tally(RULE, "POST", 200, 0.004)
    metrics.flush()
    assert metrics.requests.labels(RULE, "POST", "200")._value.get() == 2
    histogram = metrics.latency.labels(RULE)
    assert math.isclose(histogram._sum.get(), 0.006)


def test_render_flushes_first() -> None:
    metrics = GatewayMetrics()
    metrics.tally(RULE, "POST", 429, 0.01)
    metrics.tally_job("demo", "TimeoutError")
    page = metrics.render().decode()
    assert f'palm_gateway_requests_total{{method="POST",route="{RULE}",status="429"}} 1.0' in page
    assert 'palm_gateway_jobs_total{outcome="TimeoutError",service="demo"} 1.0' in page
