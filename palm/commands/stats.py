"""Show the performance counters of every live server of a palm deployment.

One row per server function: messages in, out and failed, jobs in flight,
latency percentiles over the recent window, then each server's backlog and
workers. With no flags it reads the deployment ``palm up`` runs
(``--deployment NAME`` when several run); ``--redis URL`` (or
``$PALM_REDIS_URL``) names a Redis instead. ``--watch`` redraws the table
every second until Ctrl-C.
"""

from __future__ import annotations

import argparse
import sys
import time
from typing import Any

from palm.commands import add_deployment_options, reading_state
from palm.errors import PalmError
from palm.state.counters import read_stats

__all__ = ["format_stats", "register", "run"]

_HEADER = ("SERVER", "FUNCTION", "IN", "OUT", "FAILED", "IN FLIGHT", "P50 ms", "P95 ms", "P99 ms")


def _ms(seconds: Any) -> str:
    return f"{float(seconds) * 1000:.2f}"


def format_stats(stats: dict[str, dict[str, Any]]) -> str:
    """A plain-text table of the snapshots returned by :func:`palm.state.counters.read_stats`."""
    if not stats:
        return "no live servers publish stats"
    rows: list[tuple[str, ...]] = [_HEADER]
    notes: list[str] = []
    for server in sorted(stats):
        snap = stats[server]
        functions = snap.get("functions", {})
        for name in sorted(functions) or [""]:
            f = functions.get(name, {})
            rows.append(
                (
                    server,
                    name or "-",
                    str(f.get("in", 0)),
                    str(f.get("out", 0)),
                    str(f.get("failed", 0)),
                    str(f.get("in_flight", 0)),
                    _ms(f.get("p50_s", 0.0)),
                    _ms(f.get("p95_s", 0.0)),
                    _ms(f.get("p99_s", 0.0)),
                )
            )
        workers = snap.get("workers", {})
        alive = sum(1 for w in workers.values() if w.get("alive"))
        done = sum(int(w.get("jobs_done", 0)) for w in workers.values())
        notes.append(
            f"{server}: backlog {snap.get('backlog', 0)}, workers {alive}/{len(workers)} alive, "
            f"{done} jobs done by workers, pid {snap.get('pid', '?')} on {snap.get('host', '?')}"
        )
    widths = [max(len(row[i]) for row in rows) for i in range(len(_HEADER))]
    lines = [
        "  ".join(
            cell.ljust(w) if i < 2 else cell.rjust(w)
            for i, (cell, w) in enumerate(zip(row, widths, strict=True))
        )
        for row in rows
    ]
    return "\n".join([*lines, "", *notes])


def run(args: argparse.Namespace) -> int:
    try:
        state = reading_state(args)
        while True:
            table = format_stats(read_stats(state))
            if not args.watch:
                print(table)
                return 0
            print("\x1b[H\x1b[2J" + time.strftime("%H:%M:%S") + "\n" + table, flush=True)
            time.sleep(args.interval_s)
    except KeyboardInterrupt:
        return 0
    except PalmError as exc:
        print(f"palm stats: {exc}", file=sys.stderr)
        return 1


def register(subparsers: Any) -> None:
    """Add ``palm stats`` to the CLI's subparsers."""
    parser = subparsers.add_parser(
        "stats",
        help="show performance counters",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("-w", "--watch", action="store_true", help="refresh until Ctrl-C")
    parser.add_argument(
        "--interval", dest="interval_s", type=float, default=1.0, help="seconds between refreshes"
    )
    add_deployment_options(parser, reading=True)
    parser.set_defaults(func=run)
