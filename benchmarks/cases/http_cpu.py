"""CPU per request of each process of the HTTP benchmark's stacks.

The stacks of :mod:`benchmarks.cases.http_edge` (``palm up``, and Envoy in front of
the trivial apps) come up one at a time; ``wrk`` drives each one as the benchmark
does, and the CPU time (user + system) of every process started from here, ``wrk``
included, is read before and after each run. A line per process role says how many
microseconds of CPU it spent per answered request, which tells where a stack's
requests go when req/s alone cannot (on a shared machine req/s follows the
neighbours' load; CPU per request much less)::

    python -m benchmarks.cases.http_cpu --connections 10,64 --runs 2

Not part of the suite: a diagnostic, printed as a table.
"""

from __future__ import annotations

import argparse
import resource
import tempfile
from collections import defaultdict
from pathlib import Path

import psutil

from benchmarks.cases import http_edge
from benchmarks.timing import cpu_share

#: Process roles, by a piece of their command line (the first that matches).
ROLES = (
    ("envoy", "envoy"),
    ("worker_process", "palm worker process"),
    (" worker ", "palm worker supervisor"),
    (" master ", "palm master"),
    (" masters ", "palm masters supervisor"),
    ("redis-server", "redis"),
    (" up ", "palm up"),
)


def role(process: psutil.Process) -> str:
    """What ``process`` is in a stack: gunicorn's arbiter and workers apart, the rest
    by its command line."""
    command = " ".join(process.cmdline())
    if "gunicorn" in command:
        parent = process.parent()
        under_gunicorn = parent is not None and "gunicorn" in " ".join(parent.cmdline())
        return "gunicorn worker" if under_gunicorn else "gunicorn arbiter"
    for piece, name in ROLES:
        if piece in command:
            return name
    return process.name()


def cpu_by_role() -> dict[str, float]:
    """CPU seconds so far of every process started from this one, summed by role."""
    totals: dict[str, float] = defaultdict(float)
    for process in psutil.Process().children(recursive=True):
        try:
            times = process.cpu_times()
            totals[role(process)] += times.user + times.system
        except psutil.Error:
            continue  # gone meanwhile
    return totals


def reaped_s() -> float:
    """CPU seconds of this process's children that have exited (``wrk`` after a run)."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def measure(key: str, connections: tuple[int, ...], duration_s: float, runs: int) -> None:
    """Print the CPU per request of each process role of stack ``key``, run by run."""
    with (
        tempfile.TemporaryDirectory(prefix="palm-wrk-") as folder,
        http_edge.STACKS[key]() as (url, headers),
    ):
        script = Path(folder) / "run.lua"
        script.write_text(http_edge.wrk_script(headers))
        for count in connections:
            http_edge.wrk(url, count, 1.0, script)  # warm up
            for _ in range(runs):
                before, wrk_before, machine = cpu_by_role(), reaped_s(), psutil.cpu_times()
                rate, p99, problems = http_edge.wrk(url, count, duration_s, script)
                after, wrk_s = cpu_by_role(), reaped_s() - wrk_before
                idle = cpu_share(machine, psutil.cpu_times(), "idle")
                requests = rate * duration_s
                print(
                    f"{key}, {count} connections: {rate:,.0f} req/s, p99 {p99:.1f} ms, "
                    f"CPUs idle {idle:.0f}% {problems}"
                )
                spent = {name: after[name] - before.get(name, 0.0) for name in after}
                for name, seconds in sorted(spent.items(), key=lambda item: -item[1]):
                    if seconds > 0:
                        print(f"    {seconds / requests * 1e6:8.1f} us/request  {name}")
                total = sum(spent.values()) / requests * 1e6
                print(f"    {total:8.1f} us/request  all of the stack")
                print(f"    {wrk_s / requests * 1e6:8.1f} us/request  wrk (load generator)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--stacks", default=",".join(http_edge.STACKS))
    parser.add_argument("--connections", default="10,64")
    parser.add_argument("--duration-s", type=float, default=8.0)
    parser.add_argument("--runs", type=int, default=2)
    args = parser.parse_args()
    connections = tuple(int(c) for c in args.connections.split(","))
    for key in args.stacks.split(","):
        measure(key, connections, args.duration_s, args.runs)


if __name__ == "__main__":
    main()
