"""The ``palm`` command: ``palm --help`` lists the subcommands.

Each subcommand lives in a module of :mod:`palm.commands` whose docstring is
its help text and which exposes ``register(subparsers)``.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import pkgutil
import sys
from collections.abc import Sequence
from importlib.metadata import entry_points

import palm
from palm import commands

__all__ = ["build_parser", "main"]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="palm",
        description="palm: clusters of high-performance micro-servers on ZeroMQ.",
    )
    parser.add_argument("--version", action="version", version=f"palm {palm.__version__}")
    parser.add_argument(
        "--log-level",
        default="INFO",
        choices=["DEBUG", "INFO", "WARNING", "ERROR"],
        help="logging level on stderr (default: INFO)",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for info in sorted(pkgutil.iter_modules(commands.__path__), key=lambda m: m.name):
        module = importlib.import_module(f"palm.commands.{info.name}")
        module.register(sub)
    # services outside the library (the worker pool, the gateway) add theirs
    # (once each: a venv that had the distribution under its old name lists them twice)
    seen: set[str] = set()
    for entry in sorted(entry_points(group="palm.commands"), key=lambda e: e.name):
        if entry.name not in seen:
            seen.add(entry.name)
            entry.load().register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    logging.basicConfig(
        level=getattr(logging, args.log_level),
        format="%(asctime)s %(levelname)s %(name)s[%(process)d]: %(message)s",
        stream=sys.stderr,
    )
    # the palm logger may be set lower (for the central logs); stderr keeps this level
    for handler in logging.getLogger().handlers:
        handler.setLevel(getattr(logging, args.log_level))
    result: int = args.func(args)
    return result


if __name__ == "__main__":
    sys.exit(main())
