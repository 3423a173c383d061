"""Run a short demonstration: a standalone server and a parallel cluster on loopback,
called for real, then stopped."""

from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser("demo", help="run a short demonstration on loopback", description=__doc__)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from palm.demo import run as demo

    return demo()
