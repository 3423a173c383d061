"""Generate a valid, seeded portfolio of any size.

    python -m examples.mastr.generate --positions N --seed S -o portfolio.json

The same ``(positions, seed)`` always gives the same bytes. Positions are
written one per line as they are drawn, so memory stays flat for any size.
``--invalid K`` replaces K positions (chosen by the seed) with broken ones, to
exercise the error path.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any, TextIO

from examples.mastr.schema import FORMAT

__all__ = ["BOOKS", "CURRENCIES", "generate_document", "iter_positions", "make_market", "write"]

CURRENCIES = ("EUR", "USD", "GBP", "JPY", "CHF")
BOOKS = ("EQD-FLOW", "EQD-EXOTIC", "RATES-GOV", "RATES-CORP", "FX-G10", "MACRO")
_FX_TO_EUR = {"EUR": 1.0, "USD": 0.92, "GBP": 1.17, "JPY": 0.0062, "CHF": 1.04}
_BASE_RATE = {"EUR": 0.025, "USD": 0.045, "GBP": 0.04, "JPY": 0.002, "CHF": 0.012}
_TENORS_Y = [0.25, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0]
_UNDERLYINGS_PER_CCY = 4


def make_market(rng: random.Random, reporting_currency: str = "EUR") -> dict[str, Any]:
    """Market data: FX, one curve per currency, a few equities with spots and vols."""
    fx = {c: _FX_TO_EUR[c] / _FX_TO_EUR[reporting_currency] for c in CURRENCIES}
    fx[reporting_currency] = 1.0
    curves: dict[str, Any] = {}
    for i, ccy in enumerate(CURRENCIES):
        slope = rng.uniform(-0.002, 0.004)
        curves[ccy] = {
            "compounding": "annual" if i % 2 else "continuous",
            "tenors_y": list(_TENORS_Y),
            "zero_rates": [
                round(_BASE_RATE[ccy] + slope * (t**0.5) + rng.uniform(-5e-4, 5e-4), 6)
                for t in _TENORS_Y
            ],
        }
    spots: dict[str, Any] = {}
    vols: dict[str, float] = {}
    for ccy in CURRENCIES:
        scale = 150.0 if ccy == "JPY" else 1.0
        for k in range(_UNDERLYINGS_PER_CCY):
            name = f"{ccy[:2]}STK{k}"
            spots[name] = {"currency": ccy, "price": round(rng.uniform(20.0, 400.0) * scale, 2)}
            vols[name] = round(rng.uniform(0.12, 0.6), 4)
    return {"fx": fx, "curves": curves, "spots": spots, "volatilities": vols}


def _position(rng: random.Random, index: int, market: dict[str, Any]) -> dict[str, Any]:
    pid = f"P{index:08d}"
    book = rng.choice(BOOKS)
    draw = rng.random()
    if draw < 0.5:
        underlying = rng.choice(sorted(market["spots"]))
        spot = market["spots"][underlying]
        instrument: dict[str, Any] = {
            "type": "european_option",
            "underlying": underlying,
            "option_type": rng.choice(("call", "put")),
            "strike": round(spot["price"] * rng.uniform(0.7, 1.3), 2),
            "maturity_y": round(rng.uniform(0.05, 3.0), 4),
            "quantity": rng.choice((-1, 1)) * rng.randint(1, 500),
        }
        currency = spot["currency"]
    elif draw < 0.8:
        currency = rng.choice(CURRENCIES)
        scale = 100.0 if currency == "JPY" else 1.0
        instrument = {
            "type": "fixed_rate_bond",
            "notional": rng.choice((-1, 1)) * rng.randint(1, 100) * 10_000 * scale,
            "coupon_rate": round(rng.uniform(0.0, 0.07), 4),
            "maturity_y": round(rng.uniform(0.3, 30.0), 4),
            "frequency": rng.choice((1, 2, 4)),
        }
    else:
        currency, foreign = rng.sample(CURRENCIES, 2)
        spot = market["fx"][foreign] / market["fx"][currency]
        instrument = {
            "type": "fx_forward",
            "foreign_currency": foreign,
            "notional_foreign": rng.choice((-1, 1)) * rng.randint(1, 200) * 10_000,
            "strike": round(spot * rng.uniform(0.95, 1.05), 6),
            "maturity_y": round(rng.uniform(0.05, 2.0), 4),
        }
    return {"id": pid, "book": book, "currency": currency, "instrument": instrument}


_BREAKAGES = (
    ("instrument", "strike", -10.0),
    ("instrument", "maturity_y", "soon"),
    ("", "currency", "XXX"),
    ("instrument", "type", "swaption"),
    ("", "book", ""),
)


def _break(rng: random.Random, position: dict[str, Any]) -> dict[str, Any]:
    where, key, value = rng.choice(_BREAKAGES)
    target = position["instrument"] if where else position
    target[key] = value
    return position


def iter_positions(
    count: int, seed: int, market: dict[str, Any], invalid: int = 0
) -> Iterator[dict[str, Any]]:
    """The positions of the portfolio for ``seed``, drawn one at a time."""
    rng = random.Random(f"mastr-positions-{seed}")
    breaker = random.Random(f"mastr-invalid-{seed}")
    broken = set(breaker.sample(range(count), min(invalid, count)))
    for i in range(count):
        position = _position(rng, i, market)
        yield _break(breaker, position) if i in broken else position


def write(
    out: TextIO, count: int, seed: int, invalid: int = 0, reporting_currency: str = "EUR"
) -> None:
    """Stream a portfolio document to ``out``, one position per line."""
    market = make_market(random.Random(f"mastr-market-{seed}"), reporting_currency)
    out.write("{\n")
    out.write(f'"format": {json.dumps(FORMAT)},\n')
    out.write(f'"reporting_currency": {json.dumps(reporting_currency)},\n')
    out.write(f'"market": {json.dumps(market, sort_keys=True)},\n')
    out.write('"positions": [\n')
    for i, position in enumerate(iter_positions(count, seed, market, invalid)):
        out.write(json.dumps(position, sort_keys=True))
        out.write(",\n" if i < count - 1 else "\n")
    out.write("]\n}\n")


def generate_document(count: int, seed: int, invalid: int = 0) -> dict[str, Any]:
    """The same portfolio as :func:`write`, as a Python object (for tests)."""
    market = make_market(random.Random(f"mastr-market-{seed}"), "EUR")
    return {
        "format": FORMAT,
        "reporting_currency": "EUR",
        "market": market,
        "positions": list(iter_positions(count, seed, market, invalid)),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m examples.mastr.generate", description=__doc__)
    parser.add_argument("--positions", type=int, required=True, help="number of positions")
    parser.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    parser.add_argument("--invalid", type=int, default=0, help="how many positions to break")
    parser.add_argument("-o", "--output", default="-", help="output file ('-' for stdout)")
    args = parser.parse_args(argv)
    if args.positions < 0:
        parser.error("--positions must be >= 0")
    if args.output == "-":
        write(sys.stdout, args.positions, args.seed, args.invalid)
    else:
        with Path(args.output).open("w", encoding="utf-8") as out:
            write(out, args.positions, args.seed, args.invalid)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
