"""The ``palm`` subcommands, one module each (its docstring is its help text).

Options several commands share are added here, so they read the same everywhere.
"""

from __future__ import annotations

import argparse
import os

from palm.errors import ConfigError
from palm.wire.security import ENV, Keys

__all__ = ["add_deployment_options", "add_keys_option", "apply_keys"]


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
    """``--redis`` and ``--cluster``; with ``reading``, also ``--data-dir``.

    Commands that only read a deployment (``logs``, ``stats``) default the
    cluster to ``$PALM_CLUSTER`` and may name the embedded Redis's data directory.
    """
    parser.add_argument(
        "--redis", default=None, help="Redis URL (default: $PALM_REDIS_URL, else embedded)"
    )
    parser.add_argument(
        "--cluster",
        default=os.environ.get("PALM_CLUSTER", "default") if reading else None,
        help="deployment name, the prefix of its Redis keys (default: default)",
    )
    if reading:
        parser.add_argument("--data-dir", help="data directory of the embedded Redis")
