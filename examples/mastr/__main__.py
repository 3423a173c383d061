"""mastr: value a portfolio on palm and aggregate it by book and currency in real time.

python -m examples.mastr run --positions 100000        # generate, value, print, chart
python -m examples.mastr run --input portfolio.json    # value a file
python -m examples.mastr generate --positions N --seed S -o portfolio.json
python -m examples.mastr bench --positions 20000       # loop vs Pool(2) vs palm
python -m examples.mastr run --deployment ready.json   # on a running mastr (see .service)
"""

from __future__ import annotations

import argparse
import io
import json
import os
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING

from examples.mastr import generate

if TYPE_CHECKING:
    from examples.mastr.client import Deployment

__all__ = ["main"]


#: where the chart goes by default: beside the example, in a folder git ignores
DEFAULT_CHART = Path(__file__).resolve().parent / "output" / "mastr_pv.png"


def _run(args: argparse.Namespace) -> int:
    from examples.mastr.aggregate import format_table
    from examples.mastr.schema import PortfolioError, load_portfolio, parse_portfolio

    started = time.perf_counter()
    try:
        if args.input:
            portfolio = load_portfolio(args.input)
        else:
            text = io.StringIO()
            generate.write(text, args.positions, args.seed, args.invalid)
            portfolio = parse_portfolio(text.getvalue())
    except (PortfolioError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(
        f"{len(portfolio.positions)} valid positions, {len(portfolio.errors)} invalid "
        f"(read in {time.perf_counter() - started:.1f} s)",
        file=sys.stderr,
    )
    from examples.mastr.client import value_portfolio  # palm is needed from here on
    from examples.mastr.cluster import LocalMastr

    if args.deployment:
        result = value_portfolio(
            portfolio,
            _deployment(args.deployment, args.redis),
            batch_size=args.batch_size,
            progress=True,
        )
    else:
        with LocalMastr(workers=args.workers, shards=args.shards, redis_url=args.redis) as local:
            assert local.deployment is not None
            result = value_portfolio(
                portfolio, local.deployment, batch_size=args.batch_size, progress=True
            )
    assert result.final is not None
    print(format_table(result.final.aggregates, portfolio.reporting_currency))
    rate = result.valued / result.elapsed_s if result.elapsed_s else 0.0
    print(f"\nvalued {result.valued} positions in {result.elapsed_s:.2f} s ({rate:,.0f}/s)")
    if result.invalid:
        print(f"\n{len(result.invalid)} position(s) left out:", file=sys.stderr)
        for item in result.invalid:
            who = repr(item["id"]) if item.get("id") else f"at index {item.get('index')}"
            print(f"  position {who}: field {item['field']!r}: {item['message']}", file=sys.stderr)
    if args.chart:
        try:
            from examples.mastr.chart import write_chart
        except ImportError:  # pragma: no cover - depends on the environment
            print("no chart: matplotlib is not installed", file=sys.stderr)
        else:
            try:
                path = write_chart(
                    result.final.aggregates, args.chart, portfolio.reporting_currency
                )
                print(f"chart: {path}")
            except ImportError:
                print("no chart: matplotlib is not installed", file=sys.stderr)
    return 1 if result.invalid else 0


def _deployment(path: str, redis_url: str | None) -> Deployment:
    """A running deployment from a JSON file: the ready line of ``service serve``
    (or its ``deployment``), or the ready line of ``palm masters``."""
    from examples.mastr.client import Deployment
    from examples.mastr.service import deployment_from_palm

    data = json.loads(Path(path).read_text())
    if data.get("kind") == "masters":  # palm up / palm masters with mastr's palm.yaml block
        url = redis_url or data.get("redis") or os.environ.get("PALM_REDIS_URL")
        if not url:
            raise SystemExit("error: --redis URL (or $PALM_REDIS_URL) is needed with palm masters")
        return deployment_from_palm(data["services"], url, str(data.get("name", "default")))
    return Deployment.from_json(json.dumps(data.get("deployment", data)))


def _bench(args: argparse.Namespace) -> int:
    from examples.mastr.bench import main as bench_main

    return bench_main(args)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m examples.mastr", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="value a portfolio and print its aggregates")
    run.add_argument("--positions", type=int, default=10_000, help="generate this many")
    run.add_argument("--seed", type=int, default=0)
    run.add_argument("--invalid", type=int, default=0, help="generate this many broken ones")
    run.add_argument("--input", help="a portfolio file instead of a generated one")
    run.add_argument("--workers", type=int, default=2, help="valuation workers")
    run.add_argument("--shards", type=int, default=2, help="aggregation shards")
    run.add_argument("--batch-size", type=int, default=500)
    run.add_argument("--redis", help="Redis URL (default: start a private redis-server)")
    run.add_argument(
        "--deployment",
        help="use a running mastr instead of starting one: a JSON file holding the ready "
        "line of `python -m examples.mastr.service serve` or of `palm masters`",
    )
    run.add_argument(
        "--chart",
        default=str(DEFAULT_CHART),
        help="PNG path ('' for none; default examples/mastr/output/mastr_pv.png)",
    )
    run.set_defaults(func=_run)
    gen = sub.add_parser("generate", help="write a seeded portfolio (see generate --help)")
    gen.add_argument("rest", nargs=argparse.REMAINDER)
    gen.set_defaults(func=lambda a: generate.main(a.rest))
    bench = sub.add_parser("bench", help="positions/s: loop, Pool(2) and palm in one run")
    bench.add_argument("--positions", type=int, default=20_000)
    bench.add_argument("--seed", type=int, default=0)
    bench.add_argument("--repeat", type=int, default=3)
    bench.set_defaults(func=_bench)
    args = parser.parse_args(argv)
    return int(args.func(args))


if __name__ == "__main__":
    raise SystemExit(main())
