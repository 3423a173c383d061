"""Run a pool of workers: ``palm worker pkg.module:MyWorker --connect DB --processes N``.

``--connect`` is the master's db endpoint, from which each worker learns the
master's other addresses; ``--push``/``--pull`` name them directly instead.
The pool restarts a worker that crashes (with growing backoff) and stops
them all on SIGINT/SIGTERM. A worker that fails at start ``--max-start-failures``
times in a row (each exit within 10 s of its start) makes the pool give up:
it stops and exits with status 3, its last line saying why.
``palm.serve.worker:FunctionWorker`` is the generic worker that runs ``map``
chunks (it needs ``PALM_SECRET``).

``--install-deps`` has each worker build an environment for a map function
whose packages it lacks (from ``--find-links``/``--index-url``), cached in
``--deps-cache``; see "Shipped functions and their dependencies" in the README.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from palm.commands import add_keys_option, apply_keys
from palm.ops.worker_process import add_deps_options
from palm.serve.stopper import Stopper
from palm.state.deployment import Deployment
from palm.workers.autoscale import BacklogProbe, ScalePolicy
from palm.workers.controller import ScaleController, ScaleCounters
from palm.workers.pool import GAVE_UP_EXIT, WorkerPool

log = logging.getLogger("palm.workers")


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
    add_deps_options(p)
    scale = p.add_argument_group(
        "autoscaling (needs --connect)",
        "with --max-processes the pool follows the master's backlog: one worker per "
        "--jobs-per-worker waiting or running job messages, between --processes (0 "
        "scales to zero) and --max-processes; it grows once the backlog stayed high "
        "for --scale-up-window-s and shrinks after --scale-down-after-s of lower "
        "backlog, only below what the backlog needs at a target lowered by --hysteresis",
    )
    scale.add_argument("--max-processes", type=int, default=None)
    scale.add_argument("--jobs-per-worker", type=float, default=4)
    scale.add_argument("--scale-down-after-s", type=float, default=10.0)
    scale.add_argument("--scale-up-window-s", type=float, default=0.0)
    scale.add_argument("--hysteresis", type=float, default=0.25)
    scale.add_argument("--scale-every-s", type=float, default=1.0, help="seconds between looks")
    boxes = p.add_argument_group(
        "containers (with --backend docker)",
        "the workers run as containers of --image on the Docker engine at --docker-host "
        "(default: DOCKER_HOST), one worker each, labelled palm.pool=--name; the "
        "controller finds them again when it restarts and leaves them running when it "
        "stops, unless --remove-on-exit",
    )
    boxes.add_argument("--backend", choices=("process", "docker"), default="process")
    boxes.add_argument("--image", default=None, help="the workers' image")
    boxes.add_argument("--docker-host", default=None, help="e.g. unix:///var/run/docker.sock")
    boxes.add_argument(
        "--python", default="python3", help="the Python inside the image (default python3)"
    )
    boxes.add_argument(
        "--volume", action="append", default=[], help="SRC:DST[:ro] bind mount (repeatable)"
    )
    boxes.add_argument(
        "--env", action="append", default=[], help="NAME=VALUE for the workers (repeatable)"
    )
    boxes.add_argument("--network", default="host", help="the containers' network (default host)")
    boxes.add_argument("--remove-on-exit", action="store_true")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    if args.backend == "docker":
        return run_containers(args)
    if args.connect is None and (args.push is None or args.pull is None):
        raise SystemExit("palm worker: give --connect DB_ADDRESS, or both --push and --pull")
    apply_keys(args.keys)  # the workers (and the autoscaler's probe) find it in $PALM_KEYS
    os.environ.update(deps_environment(args))  # the workers read their PALM_DEPS_* defaults
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
        policy = scale_policy(args)
    with scale_gauges(f"{args.name}-scaler", pool.controller_snapshot):
        pool.run(policy=policy, scale_every_s=args.scale_every_s)
    if pool.gave_up is not None:
        print(f"palm worker: {pool.gave_up}", file=sys.stderr, flush=True)
        return GAVE_UP_EXIT
    return 0


def scale_policy(args: argparse.Namespace) -> ScalePolicy:
    """The scaling policy the command line asks for (one for every backend)."""
    return ScalePolicy(
        args.processes,
        args.max_processes,
        args.jobs_per_worker,
        args.scale_down_after_s,
        args.scale_up_window_s,
        args.hysteresis,
    )


@contextmanager
def scale_gauges(server: str, gauges: Callable[[], dict[str, Any]]) -> Iterator[None]:
    """Publish the scaling gauges as ``server``'s counters while the pool runs,
    when the deployment has a Redis (``PALM_REDIS_URL``)."""
    if not os.environ.get("PALM_REDIS_URL"):
        yield
        return
    deployment = Deployment(server)
    deployment.counters = ScaleCounters(server, gauges)
    deployment.open()
    try:
        yield
    finally:
        deployment.close()


def run_containers(args: argparse.Namespace) -> int:
    """The controller alone, sizing a pool of worker containers until SIGINT/SIGTERM."""
    from palm.workers.containers import DockerBackend  # the docker package, only when used

    if args.connect is None or args.image is None or args.max_processes is None:
        raise SystemExit(
            "palm worker --backend docker needs --connect, --image and --max-processes"
        )
    environment = {}
    for item in args.env:
        name, sep, value = item.partition("=")
        if not sep or not name:
            raise SystemExit(f"palm worker: --env takes NAME=VALUE, not {item!r}")
        environment[name] = value
    policy = scale_policy(args)
    backend = DockerBackend(
        args.image,
        args.spec,
        args.connect,
        pool=args.name,
        docker_url=args.docker_host,
        python=args.python,
        credit=args.credit,
        heartbeat_interval_s=args.heartbeat_interval_s,
        log_level=args.log_level,
        environment=environment,
        volumes=args.volume,
        network_mode=args.network,
        grace_s=args.grace_s,
    )
    probe = BacklogProbe(args.connect)
    controller = ScaleController(policy, probe, backend)
    log.info("controller of %s found %d container(s) of its own", args.name, controller.desired)
    stopper = Stopper()
    try:
        with stopper.on_signals(), scale_gauges(f"{args.name}-scaler", controller.snapshot):
            while not stopper.stopping:
                controller.step()
                stopper.wait(args.scale_every_s)
    finally:
        stopper.close()
        if args.remove_on_exit:
            backend.remove_all()
        probe.close()
        backend.close()
    return 0


def deps_environment(args: argparse.Namespace) -> dict[str, str]:
    """The ``PALM_*`` variables that give every worker the pool's dependency options."""
    env = {
        "PALM_INSTALL_DEPS": "1" if args.install_deps else "0",
        "PALM_DEPS_FIND_LINKS": os.pathsep.join(args.find_links),
        "PALM_DEPS_NO_INDEX": "1" if args.no_index else "0",
        "PALM_DEPS_MAX_ENVS": str(args.deps_max_envs),
    }
    if args.deps_cache:
        env["PALM_DEPS_CACHE"] = str(args.deps_cache)
    if args.index_url:
        env["PALM_DEPS_INDEX_URL"] = args.index_url
    return env
