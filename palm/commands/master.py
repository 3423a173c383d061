"""Run a parallel master: ``palm master --name NAME --pull A --push A --worker-pull A
--worker-push A [--db A]``.

Every address is a ZeroMQ endpoint to bind (``tcp://127.0.0.1:*`` lets the
OS pick a port). Once bound the master prints one JSON line on stdout with
its endpoints; workers started with ``palm worker ... --connect <db>`` learn
the rest from the db endpoint. Serves until SIGINT/SIGTERM.
"""

from __future__ import annotations

import argparse

from palm.commands import add_deployment_options, add_keys_option, apply_keys
from palm.ops.loading import announce
from palm.serve.master import Master


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser("master", help="run a parallel master", description=__doc__)
    p.add_argument("--name", required=True)
    p.add_argument("--pull", required=True, help="endpoint clients send jobs to")
    p.add_argument("--push", required=True, help="endpoint clients receive results from")
    p.add_argument("--worker-pull", required=True, help="endpoint workers send results to")
    p.add_argument("--worker-push", required=True, help="endpoint workers take jobs from")
    p.add_argument("--db", default=None, help="endpoint for cache, ping and info requests")
    p.add_argument("--heartbeat-interval-s", type=float, default=1.0)
    p.add_argument(
        "--liveness", type=int, default=3, help="missed heartbeats before a worker is dead"
    )
    p.add_argument("--max-attempts", type=int, default=3, help="worker deaths before a job fails")
    add_deployment_options(p)
    add_keys_option(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    master = Master(
        args.name,
        args.pull,
        args.push,
        args.worker_pull,
        args.worker_push,
        args.db,
        heartbeat_interval_s=args.heartbeat_interval_s,
        liveness=args.liveness,
        max_attempts=args.max_attempts,
        redis_url=args.redis,
        cluster=args.cluster,
        keys=apply_keys(args.keys) or False,
    )
    master.on_ready = lambda m: announce("ready", kind="master", name=m.name, **m.bound)
    master.start()
    return 0
