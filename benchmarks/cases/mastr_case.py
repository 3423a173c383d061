"""mastr's positions per second: the same pricing code in a single-process loop,
in ``multiprocessing.Pool(2)``, and as mastr on palm (2 valuation workers, 2
aggregation shards), taking turns in each round of one run."""

from __future__ import annotations

import argparse

from benchmarks.record import Row, emit

KEYS = {"local": "single loop", "pool": "multiprocessing.Pool(2)", "palm": "mastr on palm"}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--positions", type=int, default=20_000)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    from examples.mastr import bench

    n, times, before, after = bench.run(args.positions, 0, args.runs)
    names = {"local": bench.SINGLE, "pool": bench.POOL, "palm": bench.PALM}
    processes = {"local": 1, "pool": 3, "palm": 9}  # palm: client, 3 masters, 4 workers, Redis
    note = f"load average {before:.1f} before, {after:.1f} after"
    emit([
        Row("mastr", key, names[key], "positions/s", "higher", n, {},
            [n / s for s in times[names[key]]], processes[key], "ok", note)
        for key in ("local", "pool", "palm")
    ])  # fmt: skip


if __name__ == "__main__":
    main()
