"""Aggregation by (book, currency): pure functions, and the one-process reference.

An aggregate is the count of positions and the sums of ``pv``, ``pv_reporting``,
``delta``, ``vega`` and ``dv01`` over the positions with that key.
:func:`reference_aggregates` values and sums a whole portfolio in this process;
the distributed run must agree with it.

Sums of floats depend on their order by a rounding error. :func:`compare`
therefore accepts a difference up to ``rel`` times the *gross* sum (the sum of
absolute values) of that field and key; counts must be equal.
"""

from __future__ import annotations

import math
import zlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from examples.mastr.pricing import Market, Valuation, value_position
from examples.mastr.schema import Portfolio, validate_portfolio

__all__ = [
    "FIELDS",
    "Aggregate",
    "Key",
    "aggregate",
    "compare",
    "format_table",
    "gross_aggregates",
    "key_name",
    "parse_key",
    "reference_aggregates",
    "shard_of",
    "value_all",
]

FIELDS = ("pv", "pv_reporting", "delta", "vega", "dv01")
Key = tuple[str, str]


@dataclass
class Aggregate:
    """Count and sums for one key."""

    count: int = 0
    sums: dict[str, float] = field(default_factory=lambda: dict.fromkeys(FIELDS, 0.0))

    def as_dict(self) -> dict[str, Any]:
        return {"count": self.count, **self.sums}

    @classmethod
    def from_mapping(cls, data: Mapping[str, Any]) -> Aggregate:
        return cls(int(data.get("count", 0)), {f: float(data.get(f, 0.0)) for f in FIELDS})


def key_name(key: Key) -> str:
    """``book|currency``: how a key is spelled on the wire and in Redis."""
    return f"{key[0]}|{key[1]}"


def parse_key(name: str) -> Key:
    book, _, currency = name.rpartition("|")
    return book, currency


def shard_of(key: Key, shards: int) -> int:
    """The aggregation shard that owns ``key`` (stable across processes and runs)."""
    return zlib.crc32(key_name(key).encode("utf-8")) % shards


def aggregate(valuations: Iterable[Valuation], gross: bool = False) -> dict[Key, Aggregate]:
    """Sum valuations per (book, currency), exactly rounded (``math.fsum``).

    With ``gross`` the absolute values are summed instead.
    """
    columns: dict[Key, list[list[float]]] = {}
    counts: dict[Key, int] = {}
    for v in valuations:
        key = (v.book, v.currency)
        cols = columns.setdefault(key, [[] for _ in FIELDS])
        counts[key] = counts.get(key, 0) + 1
        for col, value in zip(cols, (v.pv, v.pv_reporting, v.delta, v.vega, v.dv01), strict=True):
            col.append(abs(value) if gross else value)
    return {
        key: Aggregate(counts[key], {f: math.fsum(c) for f, c in zip(FIELDS, cols, strict=True)})
        for key, cols in sorted(columns.items())
    }


def gross_aggregates(valuations: Iterable[Valuation]) -> dict[Key, Aggregate]:
    return aggregate(valuations, gross=True)


def value_all(portfolio: Portfolio, market: Market | None = None) -> list[Valuation]:
    """Value every valid position of ``portfolio`` in this process, in order."""
    market = market or portfolio.market
    return [value_position(p, market) for p in portfolio.positions]


def reference_aggregates(portfolio: Portfolio | Mapping[str, Any]) -> dict[Key, Aggregate]:
    """Value and aggregate a portfolio (validated or a raw document) in one process."""
    if not isinstance(portfolio, Portfolio):
        portfolio = validate_portfolio(portfolio)
    return aggregate(value_all(portfolio))


def compare(
    actual: Mapping[Key, Aggregate],
    reference: Mapping[Key, Aggregate],
    gross: Mapping[Key, Aggregate],
    rel: float = 1e-9,
) -> list[str]:
    """Differences between two sets of aggregates; empty when they agree."""
    problems: list[str] = []
    for key in sorted(set(actual) | set(reference)):
        if key not in actual or key not in reference:
            problems.append(
                f"{key_name(key)}: only in {'actual' if key in actual else 'reference'}"
            )
            continue
        a, r = actual[key], reference[key]
        if a.count != r.count:
            problems.append(f"{key_name(key)}: count {a.count} != {r.count}")
        for f in FIELDS:
            scale = max(gross[key].sums[f], abs(r.sums[f]), 1e-300)
            if abs(a.sums[f] - r.sums[f]) > rel * scale:
                problems.append(f"{key_name(key)}: {f} {a.sums[f]!r} != {r.sums[f]!r}")
    return problems


def format_table(aggregates: Mapping[Key, Aggregate], reporting_currency: str = "") -> str:
    """A plain-text table of aggregates with a total row for the reporting-currency PV."""
    rep = f"pv ({reporting_currency})" if reporting_currency else "pv_reporting"
    header = ("book", "ccy", "count", "pv", rep, "delta", "vega", "dv01")
    rows = [
        (
            book,
            ccy,
            str(agg.count),
            *(f"{agg.sums[f]:,.2f}" for f in FIELDS),
        )
        for (book, ccy), agg in sorted(aggregates.items())
    ]
    total_count = sum(a.count for a in aggregates.values())
    total_rep = math.fsum(a.sums["pv_reporting"] for a in aggregates.values())
    rows.append(("TOTAL", "", str(total_count), "", f"{total_rep:,.2f}", "", "", ""))
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]

    def line(cells: tuple[str, ...]) -> str:
        return "  ".join(
            c.ljust(w) if i < 2 else c.rjust(w)
            for i, (c, w) in enumerate(zip(cells, widths, strict=True))
        )

    rule = "  ".join("-" * w for w in widths)
    return "\n".join([line(header), rule, *(line(r) for r in rows[:-1]), rule, line(rows[-1])])
