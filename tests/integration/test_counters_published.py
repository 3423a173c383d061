"""Performance counters published to a real Redis and read back."""

from __future__ import annotations

import argparse
import time
import uuid
from typing import TYPE_CHECKING

import pytest

from palm.commands import stats as stats_command
from palm.state.counters import CounterPublisher, Counters, read_stats
from palm.state.store import State

if TYPE_CHECKING:
    from tests.fixtures.redis import RedisProcess

pytestmark = pytest.mark.timeout(60)


@pytest.fixture
def state(redis_proc: RedisProcess) -> State:
    return State(redis_proc.url, cluster=f"t{uuid.uuid4().hex[:8]}")


def run_jobs(counters: Counters, count: int) -> None:
    for i in range(count):
        with counters.track("square"):
            sum(j * j for j in range(50 + i % 200))


def test_a_thousand_jobs_are_visible_through_read_stats_and_palm_stats(
    state: State, capsys: pytest.CaptureFixture[str]
) -> None:
    counters = Counters("mathsrv")
    run_jobs(counters, 1000)
    counters.worker_seen("w1", jobs_done=1000)
    publisher = CounterPublisher(state, counters, interval_s=0.1)
    with publisher:
        deadline = time.monotonic() + 10
        while publisher.published == 0 and time.monotonic() < deadline:
            time.sleep(0.01)
    stats = read_stats(state)
    assert list(stats) == ["mathsrv"]
    square = stats["mathsrv"]["functions"]["square"]
    assert (square["in"], square["out"], square["failed"], square["in_flight"]) == (
        1000,
        1000,
        0,
        0,
    )
    assert 0 < square["p50_s"] <= square["p95_s"] <= square["p99_s"]
    assert stats["mathsrv"]["workers"]["w1"]["jobs_done"] == 1000

    parser = argparse.ArgumentParser(prog="palm")
    stats_command.register(parser.add_subparsers())
    args = parser.parse_args(["stats", "--redis", state.url, "--cluster", state.cluster])
    assert args.func(args) == 0
    row = next(line for line in capsys.readouterr().out.splitlines() if "square" in line)
    assert row.split()[:5] == ["mathsrv", "square", "1000", "1000", "0"]


def test_stats_expire_when_a_server_stops_publishing(state: State) -> None:
    counters = Counters("shortlived")
    counters.record("f", 0.001)
    publisher = CounterPublisher(state, counters, interval_s=0.1, ttl_s=0.3)
    assert publisher.publish()
    assert 0 < state.client.pttl(state.key("stats", "shortlived")) <= 300  # type: ignore[operator]
    assert "shortlived" in read_stats(state)
    deadline = time.monotonic() + 10
    while "shortlived" in read_stats(state) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert read_stats(state) == {}


def test_stats_of_other_clusters_are_not_shown(redis_proc: RedisProcess) -> None:
    mine = State(redis_proc.url, cluster="mine")
    other = State(redis_proc.url, cluster="other")
    CounterPublisher(other, Counters("theirs")).publish()
    CounterPublisher(mine, Counters("ours")).publish()
    assert list(read_stats(mine)) == ["ours"]
