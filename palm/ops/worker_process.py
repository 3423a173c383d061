"""One worker process, as a pool starts it.

``python -m palm.ops.worker_process SPEC NAME --push A --pull A`` (or ``--db A``).

``--install-deps`` (or ``PALM_INSTALL_DEPS=1``) builds environments on demand
for map functions whose packages this environment lacks
(:mod:`palm.ops.environments`); its other options default to ``PALM_DEPS_*``
variables, so ``palm worker`` and a deployment can set them for every worker.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import sys
from pathlib import Path

from palm.ops.environments import EnvironmentRunner, Environments
from palm.ops.loading import load_object
from palm.ops.processes import STARTED_FD_ENV
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
    add_deps_options(p)
    return p


def add_deps_options(p: argparse.ArgumentParser) -> None:
    """The options of environments on demand, defaulting to ``PALM_*`` variables."""
    env = os.environ
    deps = p.add_argument_group("environments on demand")
    deps.add_argument(
        "--install-deps",
        action="store_true",
        default=env.get("PALM_INSTALL_DEPS", "") not in ("", "0"),
        help="build an environment for a map function whose packages are missing here",
    )
    deps.add_argument("--deps-cache", default=env.get("PALM_DEPS_CACHE") or None)
    deps.add_argument(
        "--find-links",
        action="append",
        default=[p for p in env.get("PALM_DEPS_FIND_LINKS", "").split(os.pathsep) if p],
        help="a wheelhouse directory or URL to install from (repeatable)",
    )
    deps.add_argument("--index-url", default=env.get("PALM_DEPS_INDEX_URL") or None)
    deps.add_argument(
        "--no-index",
        action="store_true",
        default=env.get("PALM_DEPS_NO_INDEX", "") not in ("", "0"),
        help="install from --find-links only",
    )
    deps.add_argument("--deps-max-envs", type=int, default=int(env.get("PALM_DEPS_MAX_ENVS") or 8))


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
    if args.install_deps:
        environments = Environments(
            Path(args.deps_cache) if args.deps_cache else None,
            find_links=args.find_links,
            index_url=args.index_url,
            no_index=args.no_index,
            max_envs=args.deps_max_envs,
        )
        worker.elsewhere = EnvironmentRunner(environments, worker.name, worker.map_secret)
    say_started()
    worker.start()
    return 0


def say_started() -> None:
    """Tell the pool this process started: its class imported and built.

    A worker that exits later (a job that kills it) did not fail to start,
    so the pool does not count it towards giving up.
    """
    fd = os.environ.pop(STARTED_FD_ENV, "")
    if fd.isdigit():
        with contextlib.suppress(OSError):
            os.write(int(fd), b"1")
            os.close(int(fd))


if __name__ == "__main__":
    sys.exit(main())
