"""mastr as services: what a deployment tool (``palm up``, compose) needs to run it.

mastr is ``1 + shards`` palm masters and their workers, plus a Redis::

    master mastr-value      workers examples.mastr.workers:ValuationWorker   x N (any N)
    master mastr-agg-<i>    workers examples.mastr.workers:AggregationWorker x 1 (exactly)
                            for i in 0 .. shards-1

- Masters are plain ``palm master`` processes; nothing mastr-specific.
- Every worker needs ``$PALM_REDIS_URL`` (the deployment's Redis); nothing else.
  A worker of ``mastr-value`` may run anywhere and in any number. A shard
  master must have exactly one worker at a time (that is what keeps each
  aggregate in one worker), restarted when it dies; its state is in Redis,
  so the replacement carries on exactly.
- The client needs the masters' db endpoints (it asks each for its other
  addresses), the Redis URL and the cluster name:
  :func:`deployment_from_masters`, or :func:`deployment_from_palm` with the
  ``services`` of the ready line ``palm masters`` prints.

:func:`plan` returns this as data; :func:`palm_yaml` as the ``services:``
entries of a ``palm.yaml`` for ``palm up`` / ``palm masters`` (one parallel
service per master, named as the master). For a one-process service, ``serve`` runs
the whole of mastr (:class:`~examples.mastr.cluster.LocalMastr`) and prints
one JSON ready line holding the deployment that ``python -m examples.mastr run
--deployment`` takes::

    python -m examples.mastr.service plan --shards 2 --workers 2
    python -m examples.mastr.service yaml --shards 2 --workers 2 --port 5590
    python -m examples.mastr.service serve --shards 2 --workers 2 [--redis URL]
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
import threading
from collections.abc import Mapping
from typing import Any

from examples.mastr.client import Deployment, MasterAddresses
from palm.ops.loading import announce
from palm.state.store import REDIS_URL_ENV

__all__ = [
    "AGGREGATION_WORKER",
    "VALUATION_MASTER",
    "VALUATION_WORKER",
    "deployment_from_masters",
    "deployment_from_palm",
    "main",
    "palm_yaml",
    "plan",
    "shard_master",
]

VALUATION_MASTER = "mastr-value"
VALUATION_WORKER = "examples.mastr.workers:ValuationWorker"
AGGREGATION_WORKER = "examples.mastr.workers:AggregationWorker"


def shard_master(index: int) -> str:
    """The name of aggregation shard ``index``'s master."""
    return f"mastr-agg-{index}"


def plan(shards: int = 2, workers: int = 2) -> dict[str, Any]:
    """The masters and worker pools of a mastr deployment, as plain data.

    ``workers[*].processes`` is a count to keep alive: ``fixed`` pools must
    never run more than that many (no autoscaling), and a dead worker is
    replaced.
    """
    if shards < 1 or workers < 1:
        raise ValueError("a mastr deployment needs at least one shard and one valuation worker")
    names = [VALUATION_MASTER, *(shard_master(i) for i in range(shards))]
    pools: list[dict[str, Any]] = [
        {
            "master": VALUATION_MASTER,
            "spec": VALUATION_WORKER,
            "processes": workers,
            "fixed": False,
            "env": [REDIS_URL_ENV],
        }
    ]
    pools += [
        {
            "master": shard_master(i),
            "spec": AGGREGATION_WORKER,
            "processes": 1,
            "fixed": True,
            "env": [REDIS_URL_ENV],
        }
        for i in range(shards)
    ]
    return {"masters": [{"name": n} for n in names], "workers": pools, "redis": "required"}


def deployment_from_masters(
    db_addresses: Mapping[str, str], redis_url: str, cluster: str = "default"
) -> Deployment:
    """A client's view of a running mastr, from each master's db endpoint by name."""
    shard_names = sorted(
        (n for n in db_addresses if n != VALUATION_MASTER), key=lambda n: int(n.rsplit("-", 1)[1])
    )
    if shard_names != [shard_master(i) for i in range(len(shard_names))] or not shard_names:
        raise ValueError(f"expected {VALUATION_MASTER} and {shard_master(0)}.. in {db_addresses}")
    return Deployment(
        MasterAddresses.discover(db_addresses[VALUATION_MASTER], VALUATION_MASTER),
        tuple(MasterAddresses.discover(db_addresses[n], n) for n in shard_names),
        redis_url,
        cluster,
    )


def palm_yaml(shards: int = 2, workers: int = 2, port: int = 5590) -> str:
    """``services:`` entries of a ``palm.yaml`` (indented two spaces) for mastr.

    Each master is a parallel service taking five ports from its ``port``.
    The routes exist because palm.yaml wants one per service; mastr's client
    talks to the masters over ZeroMQ, not through the HTTP edge.
    """
    lines = []
    for i, pool in enumerate(plan(shards, workers)["workers"]):
        name = pool["master"]
        lines += [
            f"  {name}:",
            "    kind: parallel",
            f"    worker: {pool['spec']}",
            f"    workers: {pool['processes']}",
            f"    route: /{name}",
            f"    port: {port + 5 * i}",
        ]
    return "\n".join(lines) + "\n"


def deployment_from_palm(
    services: Mapping[str, Any], redis_url: str, cluster: str = "default"
) -> Deployment:
    """A client's view of mastr from the ``services`` of ``palm masters``' ready line."""
    shard_names = sorted(
        (n for n in services if n.startswith("mastr-agg-")), key=lambda n: int(n.rsplit("-", 1)[1])
    )
    if VALUATION_MASTER not in services or not shard_names:
        raise ValueError(f"no {VALUATION_MASTER} and {shard_master(0)}.. in {sorted(services)}")

    def master(name: str) -> MasterAddresses:
        return MasterAddresses.from_ready({"name": name, **services[name]["addresses"]})

    return Deployment(
        master(VALUATION_MASTER), tuple(master(n) for n in shard_names), redis_url, cluster
    )


def _serve(args: argparse.Namespace) -> int:
    from examples.mastr.cluster import LocalMastr

    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    with LocalMastr(
        workers=args.workers, shards=args.shards, redis_url=args.redis, cluster=args.cluster
    ) as local:
        assert local.deployment is not None
        announce("ready", kind="mastr", deployment=json.loads(local.deployment.to_json()))
        while not stop.wait(0.5):
            pass
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m examples.mastr.service", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    for name in ("plan", "yaml", "serve"):
        p = sub.add_parser(name)
        p.add_argument("--shards", type=int, default=2)
        p.add_argument("--workers", type=int, default=2, help="valuation workers")
        if name == "yaml":
            p.add_argument("--port", type=int, default=5590, help="first of 5 per master")
        if name == "serve":
            p.add_argument("--redis", help="Redis URL (default: a private redis-server)")
            p.add_argument("--cluster", default="default")
    args = parser.parse_args(argv)
    if args.command == "plan":
        json.dump(plan(args.shards, args.workers), sys.stdout, indent=2)
        print()
        return 0
    if args.command == "yaml":
        print("services:")
        print(palm_yaml(args.shards, args.workers, args.port), end="")
        return 0
    return _serve(args)


if __name__ == "__main__":
    raise SystemExit(main())
