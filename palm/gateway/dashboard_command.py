"""Serve the live web dashboard of a deployment: ``palm dashboard``.

The page ``palm up`` serves through Envoy at ``/dashboard``, for a deployment
without the HTTP edge (masters, servers and workers started by ``palm
masters`` / ``palm worker`` or by a script). It reads the counters and central
logs the deployment's processes publish to Redis. With no flags it finds the
one ``palm up`` running; ``--deployment NAME`` picks one of several, and
``--redis`` (or ``$PALM_REDIS_URL``) with ``--cluster`` names any other. It asks for no API key, so
it binds 127.0.0.1 unless ``--host`` says otherwise. Stop it with Ctrl-C.
"""

from __future__ import annotations

import argparse
import signal
import sys
import threading
from types import FrameType
from typing import Any

from werkzeug.serving import make_server

from palm.commands import add_deployment_options, reading_state
from palm.errors import PalmError
from palm.gateway.dashboard import create_dashboard_app

__all__ = ["register", "run"]


def run(args: argparse.Namespace) -> int:
    try:
        state = reading_state(args)
        state.ping()
    except PalmError as exc:
        print(f"palm dashboard: {exc}", file=sys.stderr)
        return 1
    url, cluster = state.url, state.cluster
    state.close()
    app = create_dashboard_app(url, cluster)
    try:
        server = make_server(args.host, args.port, app, threaded=True)
    except OSError as exc:
        print(f"palm dashboard: cannot listen on {args.host}:{args.port}: {exc}", file=sys.stderr)
        return 1
    host, port = str(args.host), int(server.server_port)
    print(f"palm dashboard of {cluster!r}: http://{host}:{port}/dashboard", flush=True)
    if host not in ("127.0.0.1", "localhost", "::1"):
        print(
            f"palm dashboard: serving {host} without API keys: anyone who reaches it "
            "sees the deployment's counters and logs",
            file=sys.stderr,
            flush=True,
        )
    print("Stop with Ctrl-C.", flush=True)

    def stop(_signum: int, _frame: FrameType | None) -> None:
        # shutdown() waits for serve_forever to return: not from its own thread
        threading.Thread(target=server.shutdown, daemon=True).start()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    try:
        server.serve_forever()
    finally:
        server.server_close()
        app.extensions["palm_dashboard"].close()
    return 0


def register(subparsers: Any) -> None:
    """Add ``palm dashboard`` to the CLI's subparsers."""
    parser = subparsers.add_parser(
        "dashboard",
        help="serve the live web dashboard of a deployment",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    parser.add_argument(
        "--port", type=int, default=8090, help="port to bind (default 8090; 0: the OS picks)"
    )
    add_deployment_options(parser, reading=True)
    parser.set_defaults(func=run)
