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
import io
import sys
import time
from typing import Any

from rich.console import Console
from rich.table import Table
from rich.text import Text

from palm.commands import add_deployment_options, reading_state
from palm.errors import PalmError
from palm.state.counters import read_stats

__all__ = ["format_stats", "register", "run", "stats_table"]

_HEADER = ("SERVER", "FUNCTION", "IN", "OUT", "FAILED", "IN FLIGHT", "P50 ms", "P95 ms", "P99 ms")


def _ms(seconds: Any) -> str:
    return f"{float(seconds) * 1000:.2f}"


def stats_table(stats: dict[str, dict[str, Any]]) -> tuple[Table, list[str]]:
    """A rich table of the snapshots returned by :func:`palm.state.counters.read_stats`
    (failures in red), and one summary line per server."""
    table = Table(box=None, pad_edge=False, header_style="bold")
    for i, title in enumerate(_HEADER):
        table.add_column(title, justify="left" if i < 2 else "right", no_wrap=True)
    notes: list[str] = []
    for server in sorted(stats):
        snap = stats[server]
        functions = snap.get("functions", {})
        for name in sorted(functions) or [""]:
            f = functions.get(name, {})
            failed = int(f.get("failed", 0))
            table.add_row(
                server,
                name or "-",
                str(f.get("in", 0)),
                str(f.get("out", 0)),
                Text(str(failed), style="bold red" if failed else ""),
                str(f.get("in_flight", 0)),
                _ms(f.get("p50_s", 0.0)),
                _ms(f.get("p95_s", 0.0)),
                _ms(f.get("p99_s", 0.0)),
            )
        workers = snap.get("workers", {})
        alive = sum(1 for w in workers.values() if w.get("alive"))
        done = sum(int(w.get("jobs_done", 0)) for w in workers.values())
        notes.append(
            f"{server}: backlog {snap.get('backlog', 0)}, workers {alive}/{len(workers)} alive, "
            f"{done} jobs done by workers, pid {snap.get('pid', '?')} on {snap.get('host', '?')}"
        )
    return table, notes


def _print(console: Console, stats: dict[str, dict[str, Any]]) -> None:
    if not stats:
        console.print("no live servers publish stats")
        return
    table, notes = stats_table(stats)
    console.print(table)
    console.print()
    for note in notes:
        console.print(note)


def format_stats(stats: dict[str, dict[str, Any]]) -> str:
    """The stats as plain text (the table without colours), as ``palm stats`` prints
    them when its output is not a terminal."""
    buffer = io.StringIO()
    _print(Console(file=buffer, width=250, color_system=None, highlight=False), stats)
    return "\n".join(line.rstrip() for line in buffer.getvalue().rstrip("\n").splitlines())


def run(args: argparse.Namespace) -> int:
    console = Console(highlight=False, soft_wrap=True)
    try:
        state = reading_state(args)
        while True:
            stats = read_stats(state)
            if not args.watch:
                if console.is_terminal:
                    _print(console, stats)
                else:
                    print(format_stats(stats))
                return 0
            console.clear()
            console.print(time.strftime("%H:%M:%S"), style="dim")
            _print(console, stats)
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
