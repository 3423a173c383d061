"""Run a whole deployment file on this machine: ``palm up [--config palm.yaml]``.

Starts Redis (embedded unless the file gives a URL), the masters (``palm
masters``), a worker pool per parallel service (``palm worker``), the gateway
(gunicorn) and Envoy; prints the URLs and curl commands to try; then blocks
until SIGINT/SIGTERM and stops every process it started, in parallel, within
about two seconds. ``--once`` sends those requests through Envoy instead,
prints the answers and stops.

The file is checked first, all of it at once: its keys and values, and every
class and function it names is imported (``--check`` stops there). A worker
pool whose workers keep failing at start gives up, and ``palm up`` stops and
exits 1 with the workers' last lines.

Its work directory (Redis data, the gateway's pickled functions, job records,
logs) is a fresh ``palm-up-*`` temporary directory, removed on stop unless
``--keep-workdir``. Every process it starts dies with it, even when ``palm
up`` is killed with SIGKILL, and the next ``palm up`` removes the work
directory such a run left behind.

``--only gateway`` or ``--only envoy`` runs one part of the stack, the way
the docker-compose services do: the gateway finds the masters at
``--masters-host`` on the file's fixed ports; Envoy fronts ``--gateway
HOST:PORT``.
"""

from __future__ import annotations

import argparse
import json
import sys

from rich.console import Console
from rich.text import Text

from palm.commands import add_keys_option, apply_keys
from palm.errors import PalmError
from palm.gateway.guide import guide, smoke, styled
from palm.gateway.up import ROLES, Up
from palm.ops.config import load_deployment
from palm.serve.stopper import Stopper
from palm.state.registry import running_deployments


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser(
        "up",
        help="run a deployment file on this machine, behind Envoy",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--config", default="palm.yaml", help="deployment file (default palm.yaml)")
    p.add_argument("--port", type=int, default=None, help="Envoy's port (default: the file's)")
    p.add_argument("--once", action="store_true", help="send a few requests, print, stop")
    p.add_argument(
        "--check",
        action="store_true",
        help="check the file (and import every class and function it names), start nothing",
    )
    p.add_argument("--only", choices=["gateway", "envoy"], help="run one part of the stack")
    p.add_argument("--listen", default="127.0.0.1", help="address Envoy (or --only gateway) binds")
    p.add_argument("--masters-host", default=None, help="where the masters run (--only gateway)")
    p.add_argument(
        "--gateway-port", type=int, default=0, help="the gateway's port (--only gateway)"
    )
    p.add_argument("--gateway", action="append", default=[], help="HOST:PORT (--only envoy)")
    p.add_argument("--redis", default=None, help="Redis URL (default: the file's, or embedded)")
    p.add_argument(
        "--keep-workdir",
        action="store_true",
        help="keep the work directory (logs, Redis data, job records) after stopping",
    )
    add_keys_option(p)
    p.set_defaults(func=run)


def _gateways(values: list[str]) -> tuple[tuple[str, int], ...]:
    found = []
    for value in values:
        host, _, port = value.rpartition(":")
        if not host or not port.isdigit():
            raise SystemExit(f"palm up: --gateway takes HOST:PORT, not {value!r}")
        found.append((host, int(port)))
    return tuple(found)


def run(args: argparse.Namespace) -> int:
    stopper = Stopper()
    try:
        with stopper.on_signals():
            return _run(args, stopper)
    finally:
        stopper.close()


def _run(args: argparse.Namespace, stopper: Stopper) -> int:
    up: Up | None = None
    # no rewrapping and no markup: every printed command stays one line to copy
    console = Console(soft_wrap=True, highlight=False, markup=False)
    try:
        # Envoy alone needs none of the services' code (its container has none)
        config = load_deployment(args.config, imports=args.only != "envoy")
        if args.check:
            print(f"palm up: {args.config} is fine: {len(config.services)} services", flush=True)
            return 0
        roles = frozenset({args.only}) if args.only else ROLES
        # --keys, else the file's keys:, else $PALM_KEYS; every process started gets it
        keys = apply_keys(args.keys or config.keys)
        if keys is None:
            print(
                "palm up: no CURVE keys: the ZeroMQ sockets are plain (fine on loopback; "
                "'palm keys generate DIR' and --keys DIR to turn them on)",
                file=sys.stderr,
                flush=True,
            )
        up = Up(
            config,
            port=args.port,
            roles=roles,
            listen=args.listen,
            masters_host=args.masters_host,
            gateway_port=args.gateway_port,
            gateways=_gateways(args.gateway),
            redis_url=args.redis,
            keep_workdir=args.keep_workdir,
            log_level="WARNING" if args.log_level == "INFO" else args.log_level,
            keys=keys,
        )
        up.start()
        print(f"palm up: edge at {up.url}", flush=True)
        if up.edge is not None:
            print(f"  dashboard: {up.url}/dashboard", flush=True)
        for name, address in up.addresses().items():
            print(f"  service {name}: {address}")
        if up.gateway is not None:
            print(f"  gateway: {up.gateway.url} (metrics at {up.gateway.url}/metrics)")
        if up.edge is not None and up.edge.admin_address is not None:
            host, port = up.edge.admin_address
            print(f"  envoy admin: http://{host}:{port}")
        print(f"  processes: {json.dumps(up.processes)}")
        print(f"  work directory: {up.workdir}")
        if up.edge is not None:
            console.print(styled(guide(config, up.url, up.api_key)))
        if up.registered is not None:
            # with no flags when it is the only deployment running, as it mostly is
            only = len(running_deployments()) == 1
            hint = "" if only else f" --deployment {config.name}"
            console.print(
                Text.assemble(
                    ("Logs: ", "bold"),
                    (f"palm logs{hint}", "cyan"),
                    ("    Counters: ", "bold"),
                    (f"palm stats{hint}", "cyan"),
                )
            )
        for note in config.notes:
            print(note.format(deployment=up.deployment_file, redis=up.redis_url or ""), flush=True)
        if not args.once:
            console.print("Stop with Ctrl-C.", style="bold")
        if args.once:
            failed = 0
            for result in smoke(config, up.url, api_key=up.api_key):
                ok = 200 <= result["status"] < 300
                failed += not ok
                body = result["body"].decode(errors="replace").strip()
                print(f"POST {result['path']} -> {result['status']} {body}", flush=True)
            return 1 if failed else 0
        while not stopper.wait(0.5):
            pass
        return 0
    except PalmError as exc:
        print(f"palm up: {exc}", file=sys.stderr)
        return 1
    finally:
        if up is not None:
            left = up.stop()
            print(f"palm up: stopped{f' (killed {left})' if left else ''}", flush=True)
            if up.keep_workdir:
                print(f"palm up: work directory kept at {up.workdir}", flush=True)
