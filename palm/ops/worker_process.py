"""One worker process, as a pool starts it.

``python -m palm.ops.worker_process SPEC NAME --push A --pull A`` (or ``--db A``).
"""

from __future__ import annotations

import argparse
import logging
import sys

from palm.ops.loading import load_object
from palm.serve.worker import Worker


def argument_parser() -> argparse.ArgumentParser:
    """The arguments of a worker process (:func:`palm.ops.processes.worker_command`)."""
    p = argparse.ArgumentParser(prog="palm.ops.worker_process")
    p.add_argument("spec")
    p.add_argument("name")
    p.add_argument("--push", default=None)
    p.add_argument("--pull", default=None)
    p.add_argument("--db", default=None)
    p.add_argument("--credit", type=int, default=2)
    p.add_argument("--heartbeat-interval-s", type=float, default=1.0)
    p.add_argument("--log-level", default="INFO")
    p.add_argument("--redis", default=None, help="Redis URL (default: $PALM_REDIS_URL or embedded)")
    p.add_argument("--cluster", default=None)
    return p


def main(argv: list[str] | None = None) -> int:
    args = argument_parser().parse_args(argv)
    logging.basicConfig(
        level=args.log_level,
        format="%(asctime)s %(levelname)s %(name)s[%(process)d]: %(message)s",
        stream=sys.stderr,
    )
    cls = load_object(args.spec)
    if not (isinstance(cls, type) and issubclass(cls, Worker)):
        raise SystemExit(f"{args.spec} is not a palm Worker subclass")
    worker = cls(
        args.name,
        push_address=args.push,
        pull_address=args.pull,
        db_address=args.db,
        credit=args.credit,
        heartbeat_interval_s=args.heartbeat_interval_s,
        redis_url=args.redis,
        cluster=args.cluster,
    )
    worker.start()
    return 0


if __name__ == "__main__":
    sys.exit(main())
