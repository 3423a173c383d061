"""``palm keys``: keys of a deployment (``palm keys api ...``: the HTTP edge's API keys)."""

from __future__ import annotations

import argparse
from typing import Any

from palm.commands.apikeys import register_api

__all__ = ["register"]


def register(subparsers: Any) -> None:
    """Add ``palm keys`` and its subcommands to the CLI's subparsers."""
    parser = subparsers.add_parser(
        "keys",
        help="keys of a deployment (API keys of the HTTP edge)",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = parser.add_subparsers(dest="keys_command", metavar="KIND", required=True)
    register_api(sub)
