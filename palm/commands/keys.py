"""Keys of a cluster: ``palm keys generate DIR``, ``palm keys add DIR --role R NAME``
(CURVE keys for palm's sockets) and ``palm keys api create|revoke|list`` (API keys of
the HTTP edge).

``generate`` writes the server pair every binding process uses
(``server.key``/``server.key_secret``), one pair per peer role (``client``,
``worker``, ``stage``) and the allow-lists ``DIR/authorized/<role>/*.key``
holding each role's public key. ``add`` makes another pair for a role and
puts its public key on that role's allow-list (key rotation: add, move the
peers to the new pair, then delete the old public key from
``authorized/<role>/``). Running processes re-read the allow-lists every
couple of seconds. Give processes the directory with ``--keys DIR`` or
``PALM_KEYS=DIR``; peers need ``server.key`` and their role's pair, binding
processes ``server.key_secret`` and ``authorized/``.
"""

from __future__ import annotations

import argparse
import sys

from palm.commands.apikeys import register_api
from palm.errors import ConfigError
from palm.wire.security import ROLES, add_pair, generate

__all__ = ["register"]


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser(
        "keys",
        help="CURVE keys for a cluster's sockets, API keys for its HTTP edge",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    actions = p.add_subparsers(dest="keys_command", metavar="ACTION", required=True)
    gen = actions.add_parser("generate", help="write a new cluster's keys into DIR")
    gen.add_argument("directory", metavar="DIR")
    gen.set_defaults(func=run_generate)
    add = actions.add_parser("add", help="make another key pair for a role and allow it")
    add.add_argument("directory", metavar="DIR")
    add.add_argument("--role", required=True, choices=ROLES)
    add.add_argument("name", metavar="NAME", help="file name of the new pair (NAME.key)")
    add.set_defaults(func=run_add)
    register_api(actions)


def run_generate(args: argparse.Namespace) -> int:
    try:
        path = generate(args.directory)
    except ConfigError as exc:
        print(f"palm keys: {exc}", file=sys.stderr)
        return 1
    print(f"wrote the cluster keys to {path}; keep the *.key_secret files private")
    return 0


def run_add(args: argparse.Namespace) -> int:
    try:
        public = add_pair(args.directory, args.role, args.name)
    except ConfigError as exc:
        print(f"palm keys: {exc}", file=sys.stderr)
        return 1
    print(f"wrote {public} (and its .key_secret); {args.role} peers may now connect with it")
    return 0
