"""The ``palm`` command: ``palm --help`` lists the subcommands.

Each subcommand lives in a module of :mod:`palm.commands` whose docstring is
its help text and which exposes ``register(subparsers)``; commands outside the
library (the worker pool, the gateway) come from the ``palm.commands``
entry-point group, one entry per command name. ``palm COMMAND ...`` imports
that command's module alone: a master or a worker pool starts without the
gateway's Flask, the dashboard or the tables of ``palm stats``. ``palm``
alone, ``palm --help`` and a name no module claims build the whole parser.
"""

from __future__ import annotations

import argparse
import functools
import importlib
import logging
import pkgutil
import sys
from collections.abc import Callable, Sequence
from importlib.metadata import entry_points
from typing import Any

import palm
from palm import commands

__all__ = ["build_parser", "command_in", "main"]

#: options of ``palm`` itself that take a value (skipped to find the command)
_VALUED = ("--log-level",)


def _sources() -> dict[str, Callable[[], Any]]:
    """Command name -> a loader of the module that registers it; nothing imported yet.

    A module of :mod:`palm.commands` is named for its command; an entry point of the
    ``palm.commands`` group is (once each: a venv that had the distribution under its
    old name lists them twice).
    """
    found: dict[str, Callable[[], Any]] = {}
    for info in sorted(pkgutil.iter_modules(commands.__path__), key=lambda m: m.name):
        found[info.name] = functools.partial(importlib.import_module, f"palm.commands.{info.name}")
    for entry in sorted(entry_points(group="palm.commands"), key=lambda e: e.name):
        found.setdefault(entry.name, entry.load)
    return found


def _parser() -> tuple[argparse.ArgumentParser, Any]:
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
    return parser, parser.add_subparsers(dest="command", metavar="COMMAND")


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """The ``palm`` parser: with ``command``, only the module registering it is
    imported; without, or when no module registers that name, every command is."""
    sources = _sources()
    load = sources.get(command) if command else None
    if load is not None:
        parser, sub = _parser()
        load().register(sub)
        if command in sub.choices:
            return parser
    parser, sub = _parser()
    for load in sources.values():
        load().register(sub)
    return parser


def command_in(argv: Sequence[str]) -> str | None:
    """The command named on a ``palm`` command line (None: none, or help first)."""
    skip = False
    for arg in argv:
        if skip:
            skip = False
        elif arg in _VALUED:
            skip = True
        elif not arg.startswith("-"):
            return arg
        elif arg in ("-h", "--help", "--version"):
            return None
    return None


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser(command_in(argv))
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
