"""The ``palm`` subcommands, one module each (its docstring is its help text).

Options several commands share are added here, so they read the same everywhere.
"""

from __future__ import annotations

import argparse
import os

__all__ = ["add_deployment_options"]


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
