"""Show the central logs of a palm deployment, merged in time order.

Records come from the Redis streams every palm process writes to. With no
flags it reads the deployment ``palm up`` runs (``--deployment NAME`` when
several run); ``--redis URL`` (or ``$PALM_REDIS_URL``) names a Redis instead.
``--since`` takes a duration back from now (``30s``, ``10m``, ``2h``, ``1d``),
an ISO 8601 time or epoch seconds. ``--follow`` keeps printing new records
until Ctrl-C.
"""

from __future__ import annotations

import argparse
import datetime as dt
import re
import sys
from typing import Any

from palm.commands import add_deployment_options, reading_state
from palm.errors import ConfigError, PalmError
from palm.state.logs import read_logs

__all__ = ["format_record", "parse_since", "register", "run"]

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhd])\s*$")
_UNIT_S = {"s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}


def parse_since(text: str, now: float | None = None) -> float:
    """Epoch seconds for ``10m`` (ago), an ISO 8601 time, or epoch seconds."""
    reference = dt.datetime.now(dt.UTC).timestamp() if now is None else now
    match = _DURATION.match(text)
    if match:
        return reference - float(match.group(1)) * _UNIT_S[match.group(2)]
    try:
        return float(text)
    except ValueError:
        pass
    try:
        moment = dt.datetime.fromisoformat(text)
    except ValueError as exc:
        raise ConfigError(f"--since {text!r} is not a duration, ISO time or epoch") from exc
    if moment.tzinfo is None:
        moment = moment.astimezone()  # naive times are local times
    return moment.timestamp()


def format_record(record: dict[str, Any]) -> str:
    """One line (plus any traceback lines) for a log record."""
    when = dt.datetime.fromtimestamp(record["time"]).strftime("%Y-%m-%d %H:%M:%S.%f")[:-3]
    who = record.get("server", "")
    if record.get("worker"):
        who += f"/{record['worker']}"
    where = f"{record.get('host', '')}:{record.get('pid', '')}"
    request = f" [{record['request_id']}]" if record.get("request_id") else ""
    return (
        f"{when} {record.get('level', ''):<8} {who} {where}{request} "
        f"{record.get('logger', '')}: {record.get('message', '')}"
    )


def run(args: argparse.Namespace) -> int:
    try:
        since = parse_since(args.since) if args.since else None
        state = reading_state(args)
        for record in read_logs(
            state,
            server=args.server,
            level=args.level,
            since=since,
            follow=args.follow,
            limit=args.limit,
        ):
            print(format_record(record), flush=args.follow)
    except KeyboardInterrupt:
        return 0
    except (PalmError, ValueError) as exc:
        print(f"palm logs: {exc}", file=sys.stderr)
        return 1
    return 0


def register(subparsers: Any) -> None:
    """Add ``palm logs`` to the CLI's subparsers."""
    parser = subparsers.add_parser(
        "logs",
        help="show the central logs",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("-f", "--follow", action="store_true", help="keep printing new records")
    parser.add_argument("--server", help="only records of this server")
    parser.add_argument("--level", help="minimum level (DEBUG, INFO, WARNING, ERROR)")
    parser.add_argument("--since", help="10m, 2h, an ISO time or epoch seconds")
    parser.add_argument("-n", "--limit", type=int, default=1000, help="at most this many records")
    add_deployment_options(parser, reading=True)
    parser.set_defaults(func=run)
