"""The Celery application the Celery engine and its prefork workers share."""

from __future__ import annotations

import os

from celery import Celery  # type: ignore[import-not-found]

from benchmarks import workloads

REDIS_URL = os.environ.get("PALM_BENCH_REDIS_URL", "redis://127.0.0.1:6379/0")

app = Celery("palm_bench", broker=REDIS_URL, backend=REDIS_URL)
app.conf.update(
    broker_connection_retry_on_startup=True,
    result_expires=600,
    worker_hijack_root_logger=False,
)


@app.task(name="palm_bench.noop")
def noop(item: object = None) -> None:
    return workloads.noop(item)


@app.task(name="palm_bench.factorial_chunk")
def factorial_chunk(items: list[int]) -> list[int]:
    return workloads.factorial_chunk(items)
