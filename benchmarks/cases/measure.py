"""Bodies shared by the message benchmarks: a stream of N messages, a run of sequential calls.

Each takes the system under test as one callable, so raw pyzmq, palm and pylm are timed
by the same code. A run that would take longer than its budget is shortened (never to
fewer than ``floor`` items), and the row says so in its notes.
"""

from __future__ import annotations

import argparse
import os
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

import psutil

from benchmarks.processes import tree_size
from benchmarks.record import Row
from benchmarks.timing import bounded_count, percentile, timed_s

PAYLOAD = b"x" * 100
RUN_BUDGET_S = 20.0


def subject_keys(text: str, known: Iterable[str]) -> list[str]:
    """``--subjects``: a comma-separated list of distinct keys among ``known``."""
    known = list(known)
    keys = [key.strip() for key in text.split(",") if key.strip()]
    unknown = [key for key in keys if key not in known]
    if unknown or not keys or len(set(keys)) != len(keys):
        raise argparse.ArgumentTypeError(
            f"expected distinct subjects among {', '.join(known)}; got {text!r}"
        )
    return keys


def shortened_note(done: int, requested: int) -> str:
    if done >= requested:
        return ""
    return f"{done:,} of {requested:,} items per run, to keep each run under {RUN_BUDGET_S:g} s"


def cpu_s(pid: int) -> float:
    """User + system CPU seconds a process (all its threads) has used so far."""
    times = psutil.Process(pid).cpu_times()
    return float(times.user + times.system)


@dataclass(frozen=True)
class Subject:
    """One system a stream is timed on: ``round_trip(n)`` sends n messages and returns
    how many came back; ``pids`` names its other processes (``{"master": pid, ...}``)
    for CPU accounting, the client being this process."""

    key: str
    method: str
    round_trip: Callable[[int], int]
    pids: dict[str, int] = field(default_factory=dict)


def streams_in_turn(
    bench: str,
    subjects: list[Subject],
    count: int,
    runs: int,
    params: dict[str, object] | None = None,
) -> list[Row]:
    """Throughput of each subject (all up at once) over ``runs`` runs of ``count``
    messages, taken in turn, run by run (the order reversed every other run), so a slow
    spell of a shared machine falls on every subject alike. Per subject: its row of
    messages per second, then, when it names its processes, one row per process (and
    the client, this one, and "all") of CPU microseconds per message over the timed runs.
    A run that would last over ``RUN_BUDGET_S`` is shortened (the row says so)."""
    params = dict(params or {})
    done: dict[str, int] = {}
    for subject in subjects:
        _expect(subject.round_trip, min(count, 2_000))  # warm-up: connections made
        probe = min(count, 10_000)
        rate = probe / timed_s(lambda: _expect(subject.round_trip, probe))  # noqa: B023
        done[subject.key] = bounded_count(count, rate, RUN_BUDGET_S, floor=probe)
    every = {s.key: {"client": os.getpid(), **s.pids} for s in subjects}
    cpu = {s.key: {name: [] for name in every[s.key]} for s in subjects}
    rates: dict[str, list[float]] = {s.key: [] for s in subjects}
    for run in range(runs):
        for subject in subjects if run % 2 == 0 else subjects[::-1]:
            n, pids = done[subject.key], every[subject.key]
            before = {name: cpu_s(pid) for name, pid in pids.items()}
            rates[subject.key].append(n / timed_s(lambda: _expect(subject.round_trip, n)))  # noqa: B023
            for name, pid in pids.items():
                cpu[subject.key][name].append((cpu_s(pid) - before[name]) * 1e6 / n)
    rows = []
    for subject in subjects:
        n, note = done[subject.key], shortened_note(done[subject.key], count)
        common = {"bench": bench, "key": subject.key, "method": subject.method, "size": n,
                  "processes": 1 + len(subject.pids), "notes": note}  # fmt: skip
        rows.append(Row(unit="msg/s", better="higher", params=params,
                        values=rates[subject.key], **common))  # fmt: skip
        if subject.pids:
            mine = cpu[subject.key]
            total = [sum(values) for values in zip(*mine.values(), strict=True)]
            for name, values in [*mine.items(), ("all", total)]:
                process = {**params, "process": name}
                rows.append(Row(unit="cpu-us/msg", better="lower", params=process,
                                values=values, **common))  # fmt: skip
    return rows


def _expect(round_trip: Callable[[int], int], count: int) -> None:
    got = round_trip(count)
    if got != count:
        raise RuntimeError(f"sent {count} messages, got {got} back")


@dataclass(frozen=True)
class Caller:
    """One system request/reply latency is timed on: ``call()`` makes one request and
    waits for its reply; ``processes`` counts its processes, the client's included."""

    key: str
    method: str
    call: Callable[[], object]
    processes: int = 2


#: Calls a subject makes before the next subject's turn within a run.
LATENCY_BLOCK = 500


def latencies_in_turn(subjects: list[Caller], count: int, runs: int) -> list[Row]:
    """p50 and p99 (microseconds) and the rate of ``count`` sequential calls per run, for
    each subject (all up at once). Within a run the subjects take turns of
    :data:`LATENCY_BLOCK` calls (the order reversed every other run), so a slow spell of
    a shared machine falls on every subject alike."""
    for subject in subjects:
        for _ in range(min(count, 500)):
            subject.call()
    stats: dict[str, dict[str, list[float]]] = {
        s.key: {"p50": [], "p99": [], "rate": []} for s in subjects
    }
    for run in range(runs):
        order = subjects if run % 2 == 0 else subjects[::-1]
        samples: dict[str, list[float]] = {s.key: [] for s in subjects}
        spent = dict.fromkeys(samples, 0.0)
        while len(samples[order[0].key]) < count:
            for subject in order:
                mine, call = samples[subject.key], subject.call
                block = min(LATENCY_BLOCK, count - len(mine))
                start = time.perf_counter()
                for _ in range(block):
                    t0 = time.perf_counter_ns()
                    call()
                    mine.append((time.perf_counter_ns() - t0) / 1_000)
                spent[subject.key] += time.perf_counter() - start
        for key, mine in samples.items():
            mine.sort()
            stats[key]["p50"].append(percentile(mine, 0.50))
            stats[key]["p99"].append(percentile(mine, 0.99))
            stats[key]["rate"].append(count / spent[key])
    rows = []
    for subject in subjects:
        common = {"bench": "latency", "key": subject.key, "method": subject.method,
                  "size": count, "processes": subject.processes}  # fmt: skip
        for stat, unit, better in (("p50", "us", "lower"), ("p99", "us", "lower"),
                                   ("rate", "req/s", "higher")):  # fmt: skip
            rows.append(Row(unit=unit, better=better, params={"stat": stat},
                            values=stats[subject.key][stat], **common))  # fmt: skip
    return rows


def latency_rows(
    key: str, method: str, call: Callable[[], object], count: int, runs: int
) -> list[Row]:
    """p50 and p99 (microseconds) of ``count`` sequential calls, per run (one subject
    of :func:`latencies_in_turn`; its processes are this one's tree)."""
    return latencies_in_turn([Caller(key, method, call, tree_size())], count, runs)
