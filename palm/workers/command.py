"""Run a pool of workers: ``palm worker pkg.module:MyWorker --connect DB --processes N``.

``--connect`` is the master's db endpoint, from which each worker learns the
master's other addresses; ``--push``/``--pull`` name them directly instead.
The pool restarts a worker that crashes (with growing backoff) and stops
them all on SIGINT/SIGTERM. A worker that fails at start ``--max-start-failures``
times in a row (each exit within 10 s of its start) makes the pool give up:
it stops and exits with status 3, its last line saying why.
``palm.serve.worker:FunctionWorker`` is the generic worker that runs ``map``
chunks (it needs ``PALM_SECRET``).
"""

from __future__ import annotations

import argparse
import sys

from palm.commands import add_keys_option, apply_keys
from palm.workers.autoscale import ScalePolicy
from palm.workers.pool import GAVE_UP_EXIT, WorkerPool


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser("worker", help="run a supervised pool of workers", description=__doc__)
    p.add_argument("spec", help="package.module:WorkerClass")
    p.add_argument("--connect", default=None, help="the master's db endpoint")
    p.add_argument("--push", default=None, help="the master's worker_push endpoint")
    p.add_argument("--pull", default=None, help="the master's worker_pull endpoint")
    p.add_argument("--processes", type=int, default=2, help="worker processes (default 2)")
    p.add_argument("--name", default="worker", help="name prefix of the workers")
    p.add_argument("--credit", type=int, default=2, help="job messages a worker holds at once")
    p.add_argument("--heartbeat-interval-s", type=float, default=1.0)
    p.add_argument(
        "--grace-s",
        type=float,
        default=5.0,
        help="on stop, seconds a worker has after SIGTERM before SIGKILL (default 5)",
    )
    p.add_argument(
        "--max-start-failures",
        type=int,
        default=3,
        help="give up after a worker fails this many times in a row at start (0: never)",
    )
    add_keys_option(p)
    scale = p.add_argument_group(
        "autoscaling (needs --connect)",
        "with --max-processes the pool follows the master's backlog: one worker per "
        "--jobs-per-worker waiting or running job messages, between --processes and "
        "--max-processes, shrinking after --scale-down-after-s of lower backlog",
    )
    scale.add_argument("--max-processes", type=int, default=None)
    scale.add_argument("--jobs-per-worker", type=int, default=4)
    scale.add_argument("--scale-down-after-s", type=float, default=10.0)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    if args.connect is None and (args.push is None or args.pull is None):
        raise SystemExit("palm worker: give --connect DB_ADDRESS, or both --push and --pull")
    apply_keys(args.keys)  # the workers (and the autoscaler's probe) find it in $PALM_KEYS
    pool = WorkerPool(
        args.spec,
        processes=args.processes,
        name=args.name,
        connect=args.connect,
        push_address=args.push,
        pull_address=args.pull,
        credit=args.credit,
        heartbeat_interval_s=args.heartbeat_interval_s,
        grace_s=args.grace_s,
        log_level=args.log_level,
        max_start_failures=args.max_start_failures,
    )
    policy = None
    if args.max_processes is not None:
        if args.connect is None:
            raise SystemExit("palm worker: autoscaling reads the backlog through --connect")
        policy = ScalePolicy(
            args.processes, args.max_processes, args.jobs_per_worker, args.scale_down_after_s
        )
    pool.run(policy=policy)
    if pool.gave_up is not None:
        print(f"palm worker: {pool.gave_up}", file=sys.stderr, flush=True)
        return GAVE_UP_EXIT
    return 0
