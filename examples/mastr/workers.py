"""mastr's palm workers: stateless valuation, and aggregation whose state is in Redis.

A :class:`ValuationWorker` reads the market of a run once from the shared cache
(:class:`palm.state.State`) and values batches of positions. An
:class:`AggregationWorker` owns one shard of the (book, currency) keys and
applies results to them through :class:`examples.mastr.store.Store`; it keeps
nothing in memory, so a replacement started after a crash carries on exactly.
"""

from __future__ import annotations

import json
from typing import Any

import redis
from palm.standalone import Worker
from palm.state import State

from examples.mastr import wire
from examples.mastr.aggregate import shard_of
from examples.mastr.pricing import Market, Valuation, value_position
from examples.mastr.store import Store

__all__ = ["AggregationWorker", "ValuationWorker", "market_payload"]


def market_payload(reporting_currency: str, market_doc: dict[str, Any]) -> bytes:
    """What the valuation client puts in the cache for the workers."""
    return json.dumps({"reporting_currency": reporting_currency, "market": market_doc}).encode()


class ValuationWorker(Worker):
    """Values batches of positions; holds only a cache of markets read from Redis."""

    state: State

    def _market(self, key: str) -> Market:
        markets: dict[str, Market] = self.__dict__.setdefault("_markets", {})
        if key not in markets:
            raw = self.state.get(key)
            if raw is None:
                raise KeyError(f"no market under cache key {key!r}")
            doc = json.loads(raw)
            markets.clear()
            markets[key] = Market.from_dict(doc["market"], doc["reporting_currency"])
        return markets[key]

    def value(self, message: bytes) -> bytes:
        job = wire.read(message)
        market = self._market(job["market"])
        results: list[Valuation] = []
        failed: list[tuple[str, str]] = []
        for position in job["positions"]:
            try:
                results.append(value_position(position, market))
            except Exception as exc:  # one bad position must not sink its batch
                failed.append((str(position.get("id")), f"{type(exc).__name__}: {exc}"))
        return wire.valuation_reply(results, failed)

    def ping(self, message: bytes) -> bytes:
        return b"pong"


class AggregationWorker(Worker):
    """Applies results of the keys of one shard to the run's aggregates in Redis."""

    state: State
    shard: int
    shards: int

    def aggregate(self, message: bytes) -> bytes:
        job = wire.read(message)
        if (job["shard"], job["shards"]) != (self.shard, self.shards):
            raise ValueError(
                f"shard {job['shard']}/{job['shards']} sent to the worker of "
                f"{self.shard}/{self.shards}"
            )
        rows = wire.valuations(job["results"])
        for v in rows:
            if shard_of((v.book, v.currency), self.shards) != self.shard:
                raise ValueError(f"{v.position_id}: key {v.book}|{v.currency} is not in this shard")
        store = Store(self._redis(), job["run"], self.state.prefix)
        with self.state.translate("apply aggregates"):
            applied = store.apply(rows)
        return wire.aggregation_reply(len(rows), applied)

    def _redis(self) -> redis.Redis:
        return self.state.client

    def ping(self, message: bytes) -> bytes:
        return b"pong"
