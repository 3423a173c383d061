"""The ``palm`` subcommands, one module each (its docstring is its help text).

Options several commands share are added here, so they read the same everywhere.
"""

from __future__ import annotations

import argparse
import os

from palm.errors import ConfigError, StateError
from palm.state.registry import find_deployment
from palm.state.store import REDIS_URL_ENV, State, open_state
from palm.wire.security import ENV, Keys

__all__ = ["add_deployment_options", "add_keys_option", "apply_keys", "reading_state"]


def add_keys_option(parser: argparse.ArgumentParser) -> None:
    """``--keys DIR``: the CURVE keys directory (default: ``$PALM_KEYS``)."""
    parser.add_argument(
        "--keys",
        default=None,
        metavar="DIR",
        help="CURVE keys directory from 'palm keys generate' (default: $PALM_KEYS; "
        "none: plain sockets, fine on loopback only)",
    )


def apply_keys(directory: str | None) -> str | None:
    """Check ``directory`` (or ``$PALM_KEYS``) holds keys and export it as
    ``$PALM_KEYS`` for this process and the ones it starts; the directory or None.
    A directory that holds no keys ends the command with a clear message."""
    directory = directory or os.environ.get(ENV) or None
    if directory is None:
        return None
    try:
        path = str(Keys(directory).directory)
    except ConfigError as exc:
        raise SystemExit(f"palm: {exc}") from exc
    os.environ[ENV] = path
    return path


def add_deployment_options(parser: argparse.ArgumentParser, *, reading: bool = False) -> None:
    """``--redis`` and ``--cluster``; with ``reading``, also ``--deployment`` and
    ``--data-dir``.

    Commands that only read a deployment (``logs``, ``stats``) find it with
    :func:`reading_state`: with no flags, the one ``palm up`` running.
    """
    parser.add_argument(
        "--redis",
        default=None,
        help="Redis URL (default: the running deployment's, else $PALM_REDIS_URL, else embedded)"
        if reading
        else "Redis URL (default: $PALM_REDIS_URL, else embedded)",
    )
    parser.add_argument(
        "--cluster",
        default=None,
        help="the prefix of the deployment's Redis keys (default: the running deployment's "
        "name, else $PALM_CLUSTER, else default)"
        if reading
        else "deployment name, the prefix of its Redis keys (default: default)",
    )
    if reading:
        parser.add_argument(
            "--deployment",
            default=None,
            metavar="NAME",
            help="the running deployment (palm up) of this name (default: the only one running)",
        )
        parser.add_argument("--data-dir", help="data directory of the embedded Redis")


def reading_state(args: argparse.Namespace) -> State:
    """The Redis of the deployment a reading command (``logs``, ``stats``) means.

    ``--redis`` or ``--data-dir`` name it; else ``--deployment NAME`` picks a
    running ``palm up``; else ``$PALM_REDIS_URL``; else the only ``palm up``
    running; else the embedded Redis of the data directory.
    """
    cluster = args.cluster or os.environ.get("PALM_CLUSTER") or "default"
    if args.redis or args.data_dir:
        return open_state(args.redis, cluster, data_dir=args.data_dir, start=False)
    if args.deployment is None and os.environ.get(REDIS_URL_ENV):
        return open_state(None, cluster, start=False)
    try:
        running = find_deployment(args.deployment)
    except ConfigError as exc:
        if args.deployment is not None:
            raise
        try:
            return open_state(None, cluster, start=False)
        except StateError as again:
            raise StateError(f"{exc}; {again}") from again
    return State(running.redis, args.cluster or running.cluster)
