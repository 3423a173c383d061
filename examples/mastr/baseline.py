"""Two ways to value a portfolio without palm, for comparison: one loop, and a Pool.

Both return the same aggregates as :func:`examples.mastr.aggregate.reference_aggregates`.
"""

from __future__ import annotations

import multiprocessing
import multiprocessing.pool
from collections.abc import Iterator, Sequence
from typing import Any

from examples.mastr.aggregate import Aggregate, Key, aggregate
from examples.mastr.pricing import Market, Valuation, value_position
from examples.mastr.schema import Portfolio

__all__ = ["PoolValuer", "chunks", "value_single"]

_market: Market | None = None


def chunks(items: Sequence[Any], size: int) -> Iterator[Sequence[Any]]:
    for i in range(0, len(items), size):
        yield items[i : i + size]


def value_single(portfolio: Portfolio) -> dict[Key, Aggregate]:
    """Value and aggregate every valid position in this process."""
    market = portfolio.market
    return aggregate(value_position(p, market) for p in portfolio.positions)


def _init(market_doc: dict[str, Any], reporting_currency: str) -> None:
    global _market
    _market = Market.from_dict(market_doc, reporting_currency)


def _value_chunk(positions: Sequence[dict[str, Any]]) -> list[tuple[Any, ...]]:
    assert _market is not None
    return [value_position(p, _market).as_tuple() for p in positions]


class PoolValuer:
    """A ``multiprocessing.Pool`` whose workers hold the market of one portfolio."""

    def __init__(self, portfolio: Portfolio, processes: int = 2) -> None:
        self.portfolio = portfolio
        self.pool: multiprocessing.pool.Pool = multiprocessing.get_context("spawn").Pool(
            processes, _init, (portfolio.market_doc, portfolio.reporting_currency)
        )

    def run(self, chunk_size: int = 1000) -> dict[Key, Aggregate]:
        results = self.pool.imap_unordered(
            _value_chunk, chunks(self.portfolio.positions, chunk_size)
        )
        return aggregate(Valuation.from_tuple(row) for rows in results for row in rows)

    def close(self) -> None:
        self.pool.terminate()
        self.pool.join()

    def __enter__(self) -> PoolValuer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
