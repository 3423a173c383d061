"""``palm keys api``: the API keys of a deployment's HTTP edge.

``create [--name NAME] [--rate N/s]`` prints a new key once (only its SHA-256
is kept, in the deployment's Redis); ``revoke KEY_ID`` deletes one, and every
gateway refuses it within a second or two; ``list`` shows id, name, creation
time and rate limit. The deployment's Redis is found the way ``palm logs``
finds it: ``--redis``, ``--deployment NAME``, ``$PALM_REDIS_URL``, else the
one ``palm up`` running, else the live embedded one.

:mod:`palm.commands.keys` hangs these under ``palm keys``; this module adds
no top-level command of its own.
"""

from __future__ import annotations

import argparse
import datetime as dt
import sys
from typing import Any

from palm.commands import add_deployment_options, reading_state
from palm.errors import PalmError
from palm.state.apikeys import ApiKey, ApiKeyStore, parse_rate

__all__ = ["format_keys", "register", "register_api", "run"]


def format_keys(keys: list[ApiKey]) -> str:
    """A plain-text table of keys (never their tokens)."""
    if not keys:
        return "no API keys"
    rows = [("ID", "NAME", "CREATED", "RATE")]
    for key in keys:
        created = dt.datetime.fromtimestamp(key.created).strftime("%Y-%m-%d %H:%M:%S")
        rows.append((key.key_id, key.name or "-", created, f"{key.rate:g}/s" if key.rate else "-"))
    widths = [max(len(row[i]) for row in rows) for i in range(4)]
    return "\n".join(
        "  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)) for row in rows
    )


def run(args: argparse.Namespace) -> int:
    try:
        store = ApiKeyStore(reading_state(args))
        if args.action == "create":
            key, token = store.create(args.name or "", parse_rate(args.rate))
            print(f"API key {key.key_id} created; it is shown only this once:", file=sys.stderr)
            print(token)
        elif args.action == "revoke":
            if not store.revoke(args.key_id):
                print(f"palm keys api: no API key {args.key_id!r}", file=sys.stderr)
                return 1
            print(f"API key {args.key_id} revoked")
        else:
            print(format_keys(store.list()))
    except PalmError as exc:
        print(f"palm keys api: {exc}", file=sys.stderr)
        return 1
    return 0


def register_api(keys_subparsers: Any) -> None:
    """Add ``api`` (create, revoke, list) under the ``palm keys`` subparsers."""
    api = keys_subparsers.add_parser(
        "api",
        help="API keys of the HTTP edge",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    actions = api.add_subparsers(dest="action", metavar="ACTION", required=True)
    create = actions.add_parser("create", help="make a key and print it once")
    create.add_argument("--name", default="", help="what the key is for")
    create.add_argument("--rate", default=None, help="requests per second allowed, e.g. 10/s")
    revoke = actions.add_parser("revoke", help="revoke a key at once")
    revoke.add_argument("key_id", metavar="KEY_ID", help="the key's id (see list)")
    actions.add_parser("list", help="list the keys (never their tokens)")
    for parser in (create, revoke, actions.choices["list"]):
        add_deployment_options(parser, reading=True)
        parser.set_defaults(func=run)


def register(subparsers: Any) -> None:
    """No top-level command: :mod:`palm.commands.keys` registers :func:`register_api`."""
