"""Bodies shared by the message benchmarks: a stream of N messages, a run of sequential calls.

Each takes the system under test as one callable, so raw pyzmq, palm and pylm are timed
by the same code. A run that would take longer than its budget is shortened (never to
fewer than ``floor`` items), and the row says so in its notes.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable

import psutil

from benchmarks.processes import tree_size
from benchmarks.record import Row
from benchmarks.timing import bounded_count, percentile, timed_s

PAYLOAD = b"x" * 100
RUN_BUDGET_S = 20.0


def shortened_note(done: int, requested: int) -> str:
    if done >= requested:
        return ""
    return f"{done:,} of {requested:,} items per run, to keep each run under {RUN_BUDGET_S:g} s"


def cpu_s(pid: int) -> float:
    """User + system CPU seconds a process (all its threads) has used so far."""
    times = psutil.Process(pid).cpu_times()
    return float(times.user + times.system)


def stream_row(
    bench: str,
    key: str,
    method: str,
    round_trip: Callable[[int], int],
    count: int,
    runs: int,
    processes: int | None = None,
    params: dict[str, object] | None = None,
) -> Row:
    """Throughput of ``round_trip(n)``, which sends n messages and returns how many came back."""
    return stream_rows(bench, key, method, round_trip, count, runs, processes, params)[0]


def stream_rows(
    bench: str,
    key: str,
    method: str,
    round_trip: Callable[[int], int],
    count: int,
    runs: int,
    processes: int | None = None,
    params: dict[str, object] | None = None,
    pids: dict[str, int] | None = None,
) -> list[Row]:
    """The throughput row of :func:`stream_row`, then, when ``pids`` names the other
    processes (``{"master": pid, "worker 1": pid, ...}``), one row per process (and
    the client, this one) of CPU microseconds per message over the timed runs."""
    params = dict(params or {})
    _expect(round_trip, min(count, 2_000))  # warm-up: connections made, workers busy
    probe = min(count, 10_000)
    rate = probe / timed_s(lambda: _expect(round_trip, probe))
    done = bounded_count(count, rate, RUN_BUDGET_S, floor=probe)
    every = {"client": os.getpid(), **(pids or {})}
    cpu: dict[str, list[float]] = {name: [] for name in every}
    rates = []
    for _ in range(runs):
        before = {name: cpu_s(pid) for name, pid in every.items()}
        rates.append(done / timed_s(lambda: _expect(round_trip, done)))
        for name, pid in every.items():
            cpu[name].append((cpu_s(pid) - before[name]) * 1e6 / done)
    procs = processes if processes is not None else tree_size()
    note = shortened_note(done, count)
    rows = [Row(bench=bench, key=key, method=method, unit="msg/s", better="higher", size=done,
                params=params, values=rates, processes=procs, notes=note)]  # fmt: skip
    if pids:
        total = [sum(values) for values in zip(*cpu.values(), strict=True)]
        for name, values in [*cpu.items(), ("all", total)]:
            rows.append(Row(bench=bench, key=key, method=method, unit="cpu-us/msg",
                            better="lower", size=done, params={**params, "process": name},
                            values=values, processes=procs, notes=note))  # fmt: skip
    return rows


def _expect(round_trip: Callable[[int], int], count: int) -> None:
    got = round_trip(count)
    if got != count:
        raise RuntimeError(f"sent {count} messages, got {got} back")


def latency_rows(
    key: str, method: str, call: Callable[[], object], count: int, runs: int
) -> list[Row]:
    """p50 and p99 (microseconds) of ``count`` sequential calls, per run."""
    for _ in range(min(count, 500)):
        call()
    p50: list[float] = []
    p99: list[float] = []
    rates: list[float] = []
    processes = tree_size()
    for _ in range(runs):
        samples = []
        start = time.perf_counter()
        for _ in range(count):
            t0 = time.perf_counter_ns()
            call()
            samples.append((time.perf_counter_ns() - t0) / 1_000)
        rates.append(count / (time.perf_counter() - start))
        samples.sort()
        p50.append(percentile(samples, 0.50))
        p99.append(percentile(samples, 0.99))
    common = {"bench": "latency", "key": key, "size": count, "processes": processes}
    return [
        Row(method=method, unit="us", better="lower", params={"stat": "p50"}, values=p50, **common),
        Row(method=method, unit="us", better="lower", params={"stat": "p99"}, values=p99, **common),
        Row(method=method, unit="req/s", better="higher", params={"stat": "rate"}, values=rates,
            **common),
    ]  # fmt: skip
