"""Positions per second: one loop, ``multiprocessing.Pool(2)`` and mastr on palm, in one run.

    python -m examples.mastr bench --positions 20000 --repeat 3

Each method values and aggregates the same seeded portfolio (already parsed
and validated; the Pool and the palm deployment already up and warmed with
one run). The methods take turns, one run each per round, so a change in the
machine's load touches all of them alike. The figure is the median of
``repeat`` rounds; ratios are to the single loop. Every method's aggregates
are checked against the reference before its time counts.
"""

from __future__ import annotations

import argparse
import io
import os
import statistics
import time
from collections.abc import Callable, Mapping

from examples.mastr import generate
from examples.mastr.aggregate import (
    Aggregate,
    Key,
    aggregate,
    compare,
    gross_aggregates,
    value_all,
)
from examples.mastr.baseline import PoolValuer, value_single
from examples.mastr.schema import parse_portfolio

__all__ = ["main", "measure"]

Method = Callable[[], Mapping[Key, Aggregate]]


def measure(
    methods: Mapping[str, Method],
    reference: Mapping[Key, Aggregate],
    gross: Mapping[Key, Aggregate],
    repeat: int,
) -> dict[str, float]:
    """Median seconds of each method over ``repeat`` rounds; raises on a wrong result."""
    return {
        name: statistics.median(t)
        for name, t in measure_all(methods, reference, gross, repeat).items()
    }


def measure_all(
    methods: Mapping[str, Method],
    reference: Mapping[Key, Aggregate],
    gross: Mapping[Key, Aggregate],
    repeat: int,
) -> dict[str, list[float]]:
    """Seconds of each method in each of ``repeat`` rounds, the methods taking turns."""
    times: dict[str, list[float]] = {name: [] for name in methods}
    for _ in range(repeat):
        for name, fn in methods.items():
            started = time.perf_counter()
            result = fn()
            times[name].append(time.perf_counter() - started)
            problems = compare(result, reference, gross)
            if problems:
                raise AssertionError(f"{name}: {problems[:3]}")
    return times


#: The methods, in the order they run in each round.
SINGLE = "single loop"
POOL = "multiprocessing.Pool(2)"
PALM = "mastr on palm (2 valuation workers, 2 shards)"


def run(positions: int, seed: int, repeat: int) -> tuple[int, dict[str, list[float]], float, float]:
    """Positions valued, seconds per method and round, load average before and after."""
    from examples.mastr.client import value_portfolio
    from examples.mastr.cluster import LocalMastr

    text = io.StringIO()
    generate.write(text, positions, seed)
    portfolio = parse_portfolio(text.getvalue())
    valuations = value_all(portfolio)
    reference, gross = aggregate(valuations), gross_aggregates(valuations)
    with PoolValuer(portfolio, processes=2) as pool, LocalMastr(workers=2, shards=2) as local:
        deployment = local.deployment
        assert deployment is not None

        def on_palm() -> Mapping[Key, Aggregate]:
            result = value_portfolio(portfolio, deployment)
            assert result.final is not None
            return result.final.aggregates

        methods: dict[str, Method] = {
            SINGLE: lambda: value_single(portfolio),
            POOL: pool.run,
            PALM: on_palm,
        }
        pool.run()  # warm up: Pool workers started and holding the market
        on_palm()  # warm up: palm workers connected and holding the market
        load_before = os.getloadavg()[0]
        times = measure_all(methods, reference, gross, repeat)
        load_after = os.getloadavg()[0]
    return len(portfolio.positions), times, load_before, load_after


def main(args: argparse.Namespace) -> int:
    n, times, load_before, load_after = run(args.positions, args.seed, args.repeat)
    seconds = {name: statistics.median(t) for name, t in times.items()}
    base = seconds[SINGLE]
    print(
        f"{n} positions, median of {args.repeat} rounds, {os.cpu_count()} CPUs, "
        f"load average {load_before:.1f} before / {load_after:.1f} after"
    )
    print(f"{'method':48} {'positions/s':>12} {'vs loop':>8}")
    for name, s in seconds.items():
        print(f"{name:48} {n / s:12,.0f} {base / s:7.2f}x")
    return 0
