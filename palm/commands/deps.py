"""Print what a function needs on a worker: ``palm deps package.module:function``.

The dependency spec ``map`` ships with the function: every installed
distribution it imports, pinned to the version installed here, and the local
modules shipped by value (which workers do not need). ``--json`` prints the
spec as it travels, with its hash.
"""

from __future__ import annotations

import argparse
import json

from palm.ops.loading import load_object
from palm.wire import deps


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser(
        "deps", help="print the packages a shipped function needs", description=__doc__
    )
    p.add_argument("spec", help="package.module:function")
    p.add_argument("--json", action="store_true", help="print the spec as JSON")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    fn = load_object(args.spec)
    if not callable(fn):
        raise SystemExit(f"palm deps: {args.spec} is not callable")
    spec = deps.discover(fn)
    if args.json:
        print(json.dumps({"hash": spec.hash, **json.loads(spec.to_json())}, sort_keys=True))
    else:
        print(spec.describe())
    return 0
