"""Run a standalone server: ``palm serve package.module:MyServer --name NAME --address ADDR``.

The class is a subclass of ``palm.standalone.Server``. The server serves
until SIGINT/SIGTERM; once bound it prints one JSON line on stdout with its
address (``tcp://127.0.0.1:*`` lets the OS pick the port).
"""

from __future__ import annotations

import argparse
from typing import Any

from palm.commands import add_deployment_options, add_keys_option, apply_keys
from palm.ops.loading import announce, load_object
from palm.serve.server import Server


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser("serve", help="run a standalone server", description=__doc__)
    p.add_argument("spec", help="package.module:ServerClass")
    p.add_argument("--name", required=True, help="server name clients call it by")
    p.add_argument("--address", required=True, help="ZeroMQ endpoint to bind")
    p.add_argument("--max-message-bytes", type=int, default=None, help="largest message accepted")
    add_deployment_options(p)
    add_keys_option(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    cls = load_object(args.spec)
    if not (isinstance(cls, type) and issubclass(cls, Server)):
        raise SystemExit(f"palm serve: {args.spec} is not a palm Server subclass")
    options: dict[str, Any] = {
        "redis_url": args.redis,
        "cluster": args.cluster,
        "keys": apply_keys(args.keys) or False,
    }
    if args.max_message_bytes:
        options["max_message_bytes"] = args.max_message_bytes
    server = cls(args.name, args.address, **options)
    server.on_ready = lambda s: announce(
        "ready", kind="server", name=s.name, address=s.bound_address, functions=s.functions
    )
    server.start()
    return 0
