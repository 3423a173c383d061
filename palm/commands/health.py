"""Check that palm servers answer: ``palm health tcp://HOST:PORT ...`` exits 0 or 1.

Each endpoint (a standalone server's address, or a master's db endpoint) is
asked for its INFO within ``--timeout-s``; one line per endpoint says what
answered. With ``--listed`` a master must also list a worker running on this
host (by host name): the liveness check of a pod of workers. Orchestrators
run it as an exec probe (deploy/kubernetes/); it uses the CURVE keys of
``$PALM_KEYS``: the client pair, or with ``--listed`` the worker pair (a
master tells only its workers where its workers run).
"""

from __future__ import annotations

import argparse
import socket

from palm.call.request import Client
from palm.errors import PalmError
from palm.wire.info import ServiceInfo
from palm.wire.security import security_for

__all__ = ["check", "register", "run"]


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser("health", help="check that palm servers answer", description=__doc__)
    p.add_argument("endpoints", nargs="+", help="server addresses or master db endpoints")
    p.add_argument("--timeout-s", type=float, default=2.0)
    p.add_argument("--listed", action="store_true", help="each master lists a worker of this host")
    p.set_defaults(func=run)


def check(endpoint: str, timeout_s: float = 2.0, listed_host: str | None = None) -> str | None:
    """None when ``endpoint`` is healthy, else what is wrong."""
    keys = security_for(None, "worker") if listed_host is not None else None
    client = Client(endpoint, "health", timeout_s=timeout_s, keys=keys)
    try:
        info = ServiceInfo.from_wire(client.info())
    except PalmError as exc:
        return f"no answer: {exc}"
    finally:
        client.close()
    if listed_host is not None and not any(
        w.get("host") == listed_host and not w.get("leaving") for w in info.workers
    ):
        return f"{info.name} lists no worker of {listed_host}"
    return None


def run(args: argparse.Namespace) -> int:
    host = socket.gethostname() if args.listed else None
    failed = 0
    for endpoint in args.endpoints:
        problem = check(endpoint, args.timeout_s, host)
        print(f"{endpoint}: {'ok' if problem is None else problem}", flush=True)
        failed += problem is not None
    return 1 if failed else 0
