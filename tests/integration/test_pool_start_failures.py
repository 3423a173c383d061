"""A pool gives up on workers that fail to start, never on workers that started
and were then killed by what they ran (a poison job): real worker processes."""

from __future__ import annotations

import time

import pytest

from palm.workers.pool import WorkerPool

pytestmark = pytest.mark.timeout(120)

# nothing listens there: these workers never get as far as connecting
NOWHERE = "tcp://127.0.0.1:9"


def supervise(spec: str, seconds: float) -> WorkerPool:
    """A one-worker pool of ``spec``, checked for ``seconds`` or until it gives up."""
    pool = WorkerPool(
        spec,
        processes=1,
        push_address=NOWHERE,
        pull_address=NOWHERE,
        initial_backoff_s=0.05,
        max_backoff_s=0.1,
        grace_s=1.0,
        max_start_failures=2,
        start_window_s=30.0,
    )
    pool.start()
    deadline = time.monotonic() + seconds
    try:
        while time.monotonic() < deadline and pool.gave_up is None:
            pool.check()
            time.sleep(0.05)
    finally:
        pool.stop()
    return pool


def test_a_worker_that_cannot_be_built_makes_the_pool_give_up() -> None:
    pool = supervise("tests.apps.services:BrokenInit", 60)
    assert pool.gave_up is not None and "failed at start 2 times" in pool.gave_up


def test_a_worker_that_started_and_then_died_is_restarted_not_given_up_on() -> None:
    pool = supervise("tests.apps.services:DiesOnceStarted", 8)
    assert pool.gave_up is None
    assert pool.slots[0].restarts >= 2  # it died (and came back) again and again
