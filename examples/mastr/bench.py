"""Positions per second: one loop, ``multiprocessing.Pool(2)`` and mastr on palm, in one run.

    python -m examples.mastr bench --positions 20000 --repeat 3

Each method values and aggregates the same seeded portfolio (already parsed
and validated; the Pool and the palm cluster already up). The figure is the
median of ``repeat`` runs; ratios are to the single loop. Every method's
aggregates are checked against the reference before its time counts.
"""

from __future__ import annotations

import argparse
import io
import os
import statistics
import time
from collections.abc import Callable, Mapping

from examples.mastr import generate
from examples.mastr.aggregate import Aggregate, Key, compare, gross_aggregates, value_all
from examples.mastr.baseline import PoolValuer, value_single
from examples.mastr.schema import parse_portfolio

__all__ = ["main", "measure"]


def measure(
    name: str,
    fn: Callable[[], Mapping[Key, Aggregate]],
    reference: Mapping[Key, Aggregate],
    gross: Mapping[Key, Aggregate],
    repeat: int,
) -> float:
    """Median seconds of ``fn``; raises if its aggregates differ from the reference."""
    times = []
    for _ in range(repeat):
        started = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - started)
        problems = compare(result, reference, gross)
        if problems:
            raise AssertionError(f"{name}: {problems[:3]}")
    return statistics.median(times)


def main(args: argparse.Namespace) -> int:
    from examples.mastr.aggregate import aggregate
    from examples.mastr.client import value_portfolio
    from examples.mastr.cluster import LocalMastr

    text = io.StringIO()
    generate.write(text, args.positions, args.seed)
    portfolio = parse_portfolio(text.getvalue())
    n = len(portfolio.positions)
    valuations = value_all(portfolio)
    reference, gross = aggregate(valuations), gross_aggregates(valuations)
    load_before = os.getloadavg()[0]
    rows: list[tuple[str, float]] = []
    rows.append(
        (
            "single loop",
            measure("loop", lambda: value_single(portfolio), reference, gross, args.repeat),
        )
    )
    with PoolValuer(portfolio, processes=2) as pool:
        pool.run()  # warm up: workers started and holding the market
        rows.append(
            ("multiprocessing.Pool(2)", measure("pool", pool.run, reference, gross, args.repeat))
        )
    with LocalMastr(workers=2, shards=2) as cluster:
        deployment = cluster.deployment
        assert deployment is not None

        def on_palm() -> Mapping[Key, Aggregate]:
            result = value_portfolio(portfolio, deployment)
            assert result.final is not None
            return result.final.aggregates

        on_palm()  # warm up: workers connected, market loaded
        rows.append(
            (
                "mastr on palm (2 valuation workers, 2 shards)",
                measure("palm", on_palm, reference, gross, args.repeat),
            )
        )
    base = rows[0][1]
    print(
        f"{n} positions, median of {args.repeat} runs, {os.cpu_count()} CPUs, "
        f"load average {load_before:.1f} before / {os.getloadavg()[0]:.1f} after"
    )
    print(f"{'method':48} {'positions/s':>12} {'vs loop':>8}")
    for name, seconds in rows:
        print(f"{name:48} {n / seconds:12,.0f} {base / seconds:7.2f}x")
    return 0
