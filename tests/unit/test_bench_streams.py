"""The benchmarks' stream timer: subjects timed in turn, run by run, each with its rows.

The subjects here are in-process round trips that record when they ran; the real
clusters (palm's and the raw brokers') run in tests/e2e/test_benchmarks_quick.py.
"""

from __future__ import annotations

import argparse
import itertools
import os

import pytest

from benchmarks.cases import requests, streams
from benchmarks.cases.measure import (
    LATENCY_BLOCK,
    Caller,
    Subject,
    latencies_in_turn,
    streams_in_turn,
)


def _recording(key: str, calls: list[tuple[str, int]], lose: int = 0) -> Subject:
    def round_trip(n: int) -> int:
        calls.append((key, n))
        return n - lose

    return Subject(key, f"{key} method", round_trip, {"server": os.getpid()})


def test_subjects_take_their_runs_in_turn_the_order_reversed_every_other_run() -> None:
    calls: list[tuple[str, int]] = []
    subjects = [_recording("a", calls), _recording("b", calls)]
    rows = streams_in_turn("throughput", subjects, 50_000, 4)
    timed = [key for key, n in calls if n == 50_000]
    assert timed == ["a", "b", "b", "a", "a", "b", "b", "a"]
    rates = [row for row in rows if row.unit == "msg/s"]
    assert [(row.key, row.method, len(row.values)) for row in rates] == [
        ("a", "a method", 4),
        ("b", "b method", 4),
    ]
    assert all(value > 0 for row in rates for value in row.values)
    # CPU per message of the client, each named process and all together, per subject
    cpu = {(row.key, row.params["process"]) for row in rows if row.unit == "cpu-us/msg"}
    assert cpu == {(k, p) for k in "ab" for p in ("client", "server", "all")}
    assert {row.processes for row in rows} == {2}


def test_a_subject_that_loses_a_message_fails_the_stream() -> None:
    calls: list[tuple[str, int]] = []
    with pytest.raises(RuntimeError, match="got 1999 back"):
        streams_in_turn("throughput", [_recording("a", calls, lose=1)], 10_000, 1)


def test_the_subjects_option_takes_known_distinct_keys() -> None:
    assert streams._keys("palm, raw-batched") == ["palm", "raw-batched"]
    for bad in ("palm,nope", "palm,palm", " , "):
        with pytest.raises(argparse.ArgumentTypeError, match="distinct subjects"):
            streams._keys(bad)


def test_latency_subjects_take_turns_of_a_block_the_order_reversed_every_other_run() -> None:
    calls: list[str] = []

    def caller(key: str) -> Caller:
        return Caller(key, f"{key} method", lambda: calls.append(key), processes=2)

    def spans(keys: list[str]) -> list[tuple[str, int]]:
        """Consecutive calls of one subject, as (subject, how many)."""
        return [(key, len(list(group))) for key, group in itertools.groupby(keys)]

    block, count = LATENCY_BLOCK, 2 * LATENCY_BLOCK + 10  # two whole turns and a short one
    rows = latencies_in_turn([caller("a"), caller("b")], count, 2)
    warm_up = ["a"] * 500 + ["b"] * 500
    run_1 = [k for size in (block, block, 10) for k in ["a"] * size + ["b"] * size]
    run_2 = [k for size in (block, block, 10) for k in ["b"] * size + ["a"] * size]
    assert spans(calls) == spans(warm_up + run_1 + run_2)
    assert [(r.key, r.params["stat"], len(r.values)) for r in rows] == [
        (key, stat, 2) for key in "ab" for stat in ("p50", "p99", "rate")
    ]
    assert all(r.size == count and r.processes == 2 for r in rows)
    assert all(value > 0 for r in rows for value in r.values)


def test_requests_subjects_option_takes_known_distinct_keys() -> None:
    assert requests._keys("palm,raw") == ["palm", "raw"]
    with pytest.raises(argparse.ArgumentTypeError, match="distinct subjects"):
        requests._keys("palm,palm")
