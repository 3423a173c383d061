"""A deployment opened in the background: records logged before Redis is there
are shipped once it is, a worker's finds the Redis its master starts later, and
cache calls wait for the outcome."""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from palm.state import deployment as deployment_module
from palm.state.deployment import Deployment, StateOrMemory
from palm.state.embedded import ensure_redis, stop_started_redis
from palm.state.logs import read_logs
from palm.state.store import State
from tests.fixtures.procs import wait_for

if TYPE_CHECKING:
    from tests.fixtures.redis import RedisProcess

pytestmark = pytest.mark.timeout(60)


@pytest.fixture
def palm_log() -> Iterator[logging.Logger]:
    logger = logging.getLogger(f"palm.test.{uuid.uuid4().hex[:6]}")
    saved = logging.getLogger("palm").level
    yield logger
    logging.getLogger("palm").setLevel(saved)


def messages(state: State, server: str) -> list[str]:
    return [r["message"] for r in read_logs(state, server=server, limit=100)]


def test_records_logged_while_it_opens_are_shipped_in_order(
    redis_proc: RedisProcess, palm_log: logging.Logger
) -> None:
    cluster = f"t{uuid.uuid4().hex[:8]}"
    deployment = Deployment("bg", redis_url=redis_proc.url, cluster=cluster, publish=False)
    deployment.open(background=True)
    try:
        palm_log.info("first")  # most likely before the thread has connected
        state = deployment.opened(10)
        assert state is not None
        palm_log.info("second")
        palm_log.debug("below INFO: not shipped")
        wanted = ["first", "second"]
        assert wait_for(lambda: messages(state, "bg") == wanted or None, timeout_s=10)
    finally:
        deployment.close()
    assert deployment.state is None
    assert not held_handlers()


def held_handlers() -> list[logging.Handler]:
    return [h for h in logging.getLogger("palm").handlers if type(h).__name__ == "_HeldRecords"]


def test_a_worker_deployment_finds_the_redis_started_after_it_looked(
    short_tmp_dir: Path, palm_log: logging.Logger, monkeypatch: pytest.MonkeyPatch
) -> None:
    data_dir = short_tmp_dir / "data"
    monkeypatch.setenv("PALM_DATA_DIR", str(data_dir))
    monkeypatch.delenv("PALM_REDIS_URL", raising=False)
    monkeypatch.delenv("PALM_NO_REDIS", raising=False)
    deployment = Deployment("m", "w0", publish=False).open(background=True)
    try:
        palm_log.info("before redis")
        url = ensure_redis(data_dir)  # what the master does, a moment later
        state = deployment.opened(15)
        assert state is not None and state.url == url
        assert wait_for(lambda: messages(state, "m") == ["before redis"] or None, timeout_s=10)
    finally:
        deployment.close()
        stop_started_redis(data_dir)


def test_without_redis_the_cache_is_memory_and_nothing_is_held(
    palm_log: logging.Logger,
) -> None:
    deployment = Deployment("offline", redis_url=False, start_redis=True).open(background=True)
    cache = StateOrMemory(deployment)
    key = cache.set(b"value")
    assert cache.get(key) == b"value"
    assert deployment.opened(1) is None
    assert cache.delete(key) and cache.get(key) is None
    deployment.close()


def test_closing_stops_a_deployment_still_looking_for_redis(
    short_tmp_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PALM_DATA_DIR", str(short_tmp_dir / "none"))
    monkeypatch.delenv("PALM_REDIS_URL", raising=False)
    monkeypatch.delenv("PALM_NO_REDIS", raising=False)
    # a search that would outlast the test's own timeout unless close() ends it
    monkeypatch.setattr(deployment_module, "FIND_TIMEOUT_S", 3600.0)
    deployment = Deployment("m", "w0", publish=False).open(background=True)
    opener = deployment._opener
    assert opener is not None
    time.sleep(0.3)  # past the first tries: it waits between lookups now
    assert opener.is_alive()
    deployment.close()
    assert not opener.is_alive()
    assert deployment.state is None
    assert not held_handlers()
