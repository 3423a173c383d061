"""Counter arithmetic: percentiles, the sliding window, thread safety, the stats table."""

from __future__ import annotations

import threading

import pytest

from palm.commands.stats import format_stats
from palm.state.counters import Counters, LatencyWindow, percentile

pytestmark = pytest.mark.timeout(30)


def test_percentile_uses_the_nearest_rank() -> None:
    values = [float(v) for v in range(1, 101)]
    assert percentile(values, 50) == 50.0
    assert percentile(values, 95) == 95.0
    assert percentile(values, 99) == 99.0
    assert percentile(values, 100) == 100.0
    assert percentile([1.0, 2.0, 3.0, 4.0], 50) == 2.0
    assert percentile([1.0, 2.0, 3.0, 4.0], 51) == 3.0
    assert percentile([10.0] * 7, 99) == 10.0


def test_percentile_of_few_values_picks_an_observed_value() -> None:
    values = [0.1, 0.2, 0.3, 5.0, 9.0]
    assert percentile(values, 50) == 0.3
    assert percentile(values, 95) == 9.0
    assert percentile([4.0], 1) == 4.0


def test_percentile_of_nothing_is_zero_and_bad_ranks_are_refused() -> None:
    assert percentile([], 50) == 0.0
    for bad in (0, -1, 100.5):
        with pytest.raises(ValueError):
            percentile([1.0], bad)


def test_window_forgets_samples_older_than_its_span() -> None:
    window = LatencyWindow(window_s=10.0, max_samples=100)
    for i in range(10):
        window.add(1.0, now=float(i))  # old and slow
    for i in range(10):
        window.add(0.001 * (i + 1), now=100.0 + i)  # recent and fast
    pcts = window.percentiles(now=105.0)
    assert len(window) == 10
    assert pcts[50] == pytest.approx(0.005)
    assert pcts[99] == pytest.approx(0.010)


def test_window_keeps_at_most_max_samples() -> None:
    window = LatencyWindow(window_s=1e9, max_samples=50)
    for i in range(1000):
        window.add(float(i), now=0.0)
    assert len(window) == 50
    assert window.percentiles(now=0.0)[50] == 974.0  # values 950..999 remain


def test_jobs_count_in_out_failed_and_in_flight() -> None:
    counters = Counters("echo")
    started = counters.job_started("upper")
    counters.job_started("upper")
    assert counters.snapshot()["functions"]["upper"]["in_flight"] == 2
    counters.job_finished("upper", started)
    with pytest.raises(RuntimeError), counters.track("upper"):
        raise RuntimeError("user code failed")
    counters.record("lower", 0.25)
    snap = counters.snapshot()
    upper = snap["functions"]["upper"]
    assert (upper["in"], upper["out"], upper["failed"], upper["in_flight"]) == (3, 1, 1, 1)
    assert snap["functions"]["lower"]["p50_s"] == 0.25
    assert (snap["in"], snap["out"], snap["failed"], snap["in_flight"]) == (4, 2, 1, 1)


def test_workers_and_backlog_are_reported() -> None:
    counters = Counters("echo")
    counters.set_backlog(7)
    counters.worker_seen("w1", jobs_done=3)
    counters.worker_seen("w2", jobs_done=5, host="node-b", pid=42, busy=3)
    counters.worker_lost("w2")
    snap = counters.snapshot()
    assert snap["backlog"] == 7
    assert snap["workers"]["w1"]["alive"] is True
    assert snap["workers"]["w2"] == {
        "alive": False,
        "jobs_done": 5,
        "last_seen": snap["workers"]["w2"]["last_seen"],
        "host": "node-b",
        "pid": 42,
        "busy": 0,  # a lost worker holds nothing any more
    }


def test_counts_from_many_threads_add_up() -> None:
    counters = Counters("echo")

    def work() -> None:
        for _ in range(2000):
            with counters.track("f"):
                pass

    threads = [threading.Thread(target=work) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    f = counters.snapshot()["functions"]["f"]
    assert (f["in"], f["out"], f["in_flight"]) == (8000, 8000, 0)


def test_the_stats_table_shows_every_function_and_worker_summary() -> None:
    counters = Counters("echo")
    for _ in range(3):
        counters.record("upper", 0.002)
    counters.worker_seen("w1", 3)
    table = format_stats({"echo": counters.snapshot()})
    lines = table.splitlines()
    assert lines[0].split()[:3] == ["SERVER", "FUNCTION", "IN"]
    assert lines[1].split()[:5] == ["echo", "upper", "3", "3", "0"]
    assert "2.00" in lines[1]
    assert "workers 1/1 alive" in table
    assert format_stats({}) == "no live servers publish stats"
