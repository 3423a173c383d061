"""CPU time per task across every process of a local palm cluster (a noise-proof figure).

``python -m benchmarks.cases.cpu_per_task --count 100000``: a LocalCluster with 2
workers runs ``map(inc, range(count), chunksize=1)`` (the tiny-task shape) and
``job('echo', ...)``-free maps alike; the row is the CPU microseconds per task
spent by the client, the master and the workers together (user + system, from
psutil), which another load on the machine changes far less than wall time.
"""

from __future__ import annotations

import argparse
import os

import psutil

from benchmarks.record import Row, emit


def inc(x: int) -> int:
    return x + 1


def _cpu(proc: psutil.Process) -> float:
    times = proc.cpu_times()
    return float(times.user + times.system)


def measure(count: int) -> tuple[float, float]:
    """(CPU-us per task in all processes, of which in the client)."""
    try:
        from palm.ops.cluster import LocalCluster  # type: ignore[import-not-found]
    except ImportError:  # an older layout, for before/after comparisons
        from palm.cluster import LocalCluster  # type: ignore[import-not-found,no-redef]

    me = psutil.Process()
    with LocalCluster(workers=2) as cluster:
        cluster.map(inc, range(2_000), chunksize=1)  # workers warm, function cached
        children = me.children(recursive=True)
        before = {child.pid: _cpu(child) for child in children}
        own = _cpu(me)
        results = cluster.map(inc, range(count), chunksize=1)
        own = _cpu(me) - own
        others = sum(_cpu(child) - before[child.pid] for child in children)
    if results != [x + 1 for x in range(count)]:
        raise RuntimeError("map returned wrong results")
    return (own + others) * 1e6 / count, own * 1e6 / count


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--count", type=int, default=100_000)
    args = parser.parse_args()
    os.environ.setdefault("PALM_SECRET", "benchmark")
    os.environ.setdefault("PALM_NO_REDIS", "1")
    total, client = measure(args.count)
    method = "palm map, chunksize=1 (LocalCluster, 2 workers)"
    emit(
        [
            Row("cpu", "palm", method, "cpu-us/task", "lower", args.count, values=[total]),
            Row("cpu", "palm-client", method, "client cpu-us/task", "lower", args.count,
                values=[client]),
        ]
    )  # fmt: skip


if __name__ == "__main__":
    main()
