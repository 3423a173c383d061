"""Redis SIGKILLed under a running palm process: nothing crashes, everything resumes."""

from __future__ import annotations

import concurrent.futures
import logging
import time
import uuid
from typing import TYPE_CHECKING

import pytest

from palm.errors import StateError
from palm.state.counters import CounterPublisher, Counters, read_stats
from palm.state.logs import RedisLogHandler, read_logs
from palm.state.store import State

if TYPE_CHECKING:
    from tests.fixtures.redis import RedisProcess

pytestmark = pytest.mark.timeout(90)


def quiet_logger(handler: logging.Handler) -> logging.Logger:
    logger = logging.getLogger(f"palm.test.{uuid.uuid4().hex[:6]}")
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    logger.propagate = False
    return logger


def test_cache_calls_fail_fast_with_state_error_and_work_after_restart(
    redis_proc: RedisProcess,
) -> None:
    state = State(redis_proc.url, cluster="outage", socket_timeout_s=1.0)
    state.set(b"before", "k")
    redis_proc.kill()
    for call in (lambda: state.get("k"), lambda: state.set(b"x", "k"), lambda: state.ping()):
        # It fails with StateError instead of hanging or retrying on and on: the
        # call ends (event) well within a generous deadline.
        with concurrent.futures.ThreadPoolExecutor(1) as pool:
            outcome = pool.submit(call)
            caught = outcome.exception(timeout=60 * state.socket_timeout_s)
        assert isinstance(caught, StateError)
        assert redis_proc.url in str(caught)
    with pytest.raises(StateError):
        state.delete("k")
    redis_proc.start()
    assert state.get("k") == b"before"
    state.set(b"after", "k")
    assert state.get("k") == b"after"


def test_logs_buffer_while_redis_is_down_and_arrive_after_restart(
    redis_proc: RedisProcess, capfd: pytest.CaptureFixture[str]
) -> None:
    state = State(redis_proc.url, cluster="outage")
    handler = RedisLogHandler(state, "survivor", buffer_size=1000)
    log = quiet_logger(handler)
    try:
        log.info("before the crash")
        assert handler.drain(10)
        redis_proc.kill()
        for i in range(300):
            log.info("during the outage %d", i)  # must return without waiting for Redis
        assert _wait(lambda: handler.redis_down)
        assert handler.pending == 300  # all held in memory
        assert handler.dropped == 0
        redis_proc.start()
        assert _wait(lambda: handler.pending == 0)
        assert not handler.redis_down
        log.info("after the restart")
        assert handler.drain(10)
    finally:
        handler.close()
    messages = [r["message"] for r in read_logs(state, server="survivor")]
    assert messages[0] == "before the crash"
    assert messages[1:301] == [f"during the outage {i}" for i in range(300)]
    assert messages[-1] == "after the restart"
    assert "unreachable" in capfd.readouterr().err


def test_a_full_log_buffer_drops_the_oldest_records_with_one_warning(
    redis_proc: RedisProcess, capfd: pytest.CaptureFixture[str]
) -> None:
    state = State(redis_proc.url, cluster="outage")
    redis_proc.kill()
    handler = RedisLogHandler(state, "tiny", buffer_size=50, batch_size=10)
    log = quiet_logger(handler)
    try:
        for i in range(120):
            log.info("record %d", i)
        assert handler.pending <= 50
        assert handler.dropped + handler.pending == 120
        redis_proc.start()
        assert _wait(lambda: handler.pending == 0)
    finally:
        handler.close()
    # Read only once the shipper thread has ended: it writes its own warnings to
    # stderr, and a capture read while another thread writes can lose both.
    assert capfd.readouterr().err.count("log buffer full") == 1
    numbers = [int(r["message"].split()[1]) for r in read_logs(state, server="tiny")]
    assert numbers[-50:] == list(range(70, 120))  # the newest records all arrive, in order
    # A batch already handed to Redis when it was given up may still arrive; no more.
    assert numbers == sorted(numbers) and len(numbers) <= 50 + 10


def test_counter_publishing_survives_an_outage(redis_proc: RedisProcess) -> None:
    state = State(redis_proc.url, cluster="outage")
    counters = Counters("steady")
    with CounterPublisher(state, counters, interval_s=0.05) as publisher:
        assert _wait(lambda: publisher.published > 0)
        redis_proc.kill()
        failures = publisher.failures
        assert _wait(lambda: publisher.failures > failures)
        for _ in range(10):
            counters.record("f", 0.001)  # counting goes on meanwhile
        with pytest.raises(StateError):
            read_stats(state)
        redis_proc.start()
        assert _wait(lambda: read_stats(state).get("steady", {}).get("in") == 10)


def _wait(predicate: object, timeout_s: float = 30.0) -> bool:
    assert callable(predicate)
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            if predicate():
                return True
        except StateError:
            pass
        time.sleep(0.02)
    return False
