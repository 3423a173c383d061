"""Start one mastr process: a palm master, a valuation worker or an aggregation worker.

    python -m examples.mastr.node master --name N --pull A --push A \\
        --worker-pull A --worker-push A --db A
    python -m examples.mastr.node value-worker --name N --push A --pull A --db A \\
        --redis URL [--cluster C]
    python -m examples.mastr.node agg-worker --name N --push A --pull A --db A \\
        --redis URL --shard I --shards K [--cluster C]

A worker's ``--push``/``--pull`` are its master's ``--worker-pull``/``--worker-push``.
"""

from __future__ import annotations

import argparse
import logging

__all__ = ["main"]


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m examples.mastr.node", description=__doc__)
    sub = parser.add_subparsers(dest="role", required=True)
    master = sub.add_parser("master")
    for flag in ("--name", "--pull", "--push", "--worker-pull", "--worker-push", "--db"):
        master.add_argument(flag, required=True)
    for role in ("value-worker", "agg-worker"):
        worker = sub.add_parser(role)
        for flag in ("--name", "--push", "--pull", "--db", "--redis"):
            worker.add_argument(flag, required=True)
        worker.add_argument("--cluster", default="default")
        if role == "agg-worker":
            worker.add_argument("--shard", type=int, required=True)
            worker.add_argument("--shards", type=int, required=True)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(name)s %(message)s")
    from palm.standalone import Master
    from palm.state import State

    if args.role == "master":
        Master(
            name=args.name,
            pull_address=args.pull,
            push_address=args.push,
            worker_pull_address=args.worker_pull,
            worker_push_address=args.worker_push,
            db_address=args.db,
            palm=True,
        ).start()
        return 0

    from examples.mastr.workers import AggregationWorker, ValuationWorker

    cls = ValuationWorker if args.role == "value-worker" else AggregationWorker
    worker = cls(args.name, push_address=args.push, pull_address=args.pull, db_address=args.db)
    worker.state = State(args.redis, args.cluster)
    if isinstance(worker, AggregationWorker):
        worker.shard, worker.shards = args.shard, args.shards
    worker.start()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
