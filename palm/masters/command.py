"""Run the masters of a deployment file: ``palm masters --config palm.yaml``.

Starts one ``palm master`` per parallel or function service and one ``palm
serve`` per standalone service, on the ports the file gives (``--any-port``:
ports the OS picks) and on ``--host`` (default: the file's ``host``;
``0.0.0.0`` lets workers on other hosts connect). Once all are bound it prints
one JSON line with every endpoint, restarts a service that dies, and stops
them all on SIGINT/SIGTERM.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

from palm.commands import add_keys_option, apply_keys
from palm.errors import ConfigError
from palm.masters.service import MastersService
from palm.ops.config import load_deployment
from palm.ops.loading import announce
from palm.wire.security import is_wildcard


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser(
        "masters",
        help="run the masters and servers of a deployment file",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--config", default="palm.yaml", help="deployment file (default palm.yaml)")
    p.add_argument("--host", default=None, help="address to bind (default: the file's host)")
    p.add_argument("--any-port", action="store_true", help="let the OS pick every port")
    p.add_argument(
        "--grace-s",
        type=float,
        default=5.0,
        help="on stop, seconds a master has after SIGTERM before SIGKILL (default 5)",
    )
    add_keys_option(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    try:
        config = load_deployment(args.config)
        # --keys, else the file's keys:, else $PALM_KEYS; exported to every master
        keys = apply_keys(args.keys or config.keys)
        host = args.host or config.host
        if keys is None and is_wildcard(f"tcp://{host}:0"):
            print(
                f"palm masters: WARNING: binding {host} without CURVE keys: anyone on the "
                "network can submit jobs, register as a worker and read the traffic; "
                "run 'palm keys generate DIR' and pass --keys DIR",
                file=sys.stderr,
                flush=True,
            )
        service = MastersService(
            config,
            host=args.host,
            any_port=args.any_port,
            log_level=args.log_level,
            grace_s=args.grace_s,
        )

        def ready(services: dict[str, Any]) -> None:
            announce("ready", kind="masters", name=config.name, services=services)

        service.run(on_ready=ready)
    except ConfigError as exc:
        print(f"palm masters: {exc}", file=sys.stderr)
        return 1
    return 0
