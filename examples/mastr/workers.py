"""mastr's palm workers: stateless valuation, and aggregation whose state is in Redis.

Both are plain :class:`palm.standalone.Worker` subclasses, so any palm way of
starting workers runs them::

    PALM_REDIS_URL=redis://127.0.0.1:6379/0 \\
        python -m palm.ops.worker_process examples.mastr.workers:ValuationWorker value-0 \\
        --push <master worker_push> --pull <master worker_pull>
    PALM_REDIS_URL=... palm worker examples.mastr.workers:AggregationWorker --connect <db>

The only configuration is the Redis URL in ``$PALM_REDIS_URL``; the cluster
name (the Redis key prefix) travels in every job.

A :class:`ValuationWorker` reads the market of a run once from the shared cache
(:class:`palm.state.store.State`) and values batches of positions. An
:class:`AggregationWorker` is the one worker of one aggregation shard's master
and applies that shard's results through :class:`examples.mastr.store.Store`;
it keeps nothing in memory, so a replacement started after a crash carries on
exactly where the dead one stopped.
"""

from __future__ import annotations

import json
from typing import Any

from examples.mastr import wire
from examples.mastr.aggregate import shard_of
from examples.mastr.pricing import Market, Valuation, value_position
from examples.mastr.store import Store
from palm.errors import ConfigError
from palm.standalone import Worker
from palm.state.store import REDIS_URL_ENV, State, resolve_redis_url

__all__ = ["AggregationWorker", "ValuationWorker", "market_payload"]


def market_payload(reporting_currency: str, market_doc: dict[str, Any]) -> bytes:
    """What the valuation client puts in the cache for the workers."""
    return json.dumps({"reporting_currency": reporting_currency, "market": market_doc}).encode()


class _RedisWorker(Worker):
    """A worker holding one :class:`State` per cluster it has served (made on first use)."""

    def _state(self, cluster: str) -> State:
        states: dict[str, State] = self.__dict__.setdefault("_states", {})
        if cluster not in states:
            url = resolve_redis_url()
            if url is None:
                raise ConfigError(f"mastr workers need ${REDIS_URL_ENV} (the deployment's Redis)")
            states[cluster] = State(url, cluster)
        return states[cluster]

    def ping(self, message: bytes) -> bytes:
        return b"pong"


class ValuationWorker(_RedisWorker):
    """Values batches of positions; holds only the last market it read from Redis."""

    def _market(self, cluster: str, key: str) -> Market:
        markets: dict[tuple[str, str], Market] = self.__dict__.setdefault("_markets", {})
        if (cluster, key) not in markets:
            raw = self._state(cluster).get(key)
            if raw is None:
                raise KeyError(f"no market under cache key {key!r} of cluster {cluster!r}")
            doc = json.loads(raw)
            markets.clear()
            markets[(cluster, key)] = Market.from_dict(doc["market"], doc["reporting_currency"])
        return markets[(cluster, key)]

    def value(self, message: bytes) -> bytes:
        job = wire.read(message)
        market = self._market(job["cluster"], job["market"])
        results: list[Valuation] = []
        failed: list[tuple[str, str]] = []
        for position in job["positions"]:
            try:
                results.append(value_position(position, market))
            except Exception as exc:  # one bad position must not sink its batch
                failed.append((str(position.get("id")), f"{type(exc).__name__}: {exc}"))
        return wire.valuation_reply(results, failed)


class AggregationWorker(_RedisWorker):
    """Applies the results of one shard's keys to the run's aggregates in Redis.

    The worker serves one shard for its whole life: the first job fixes it, and
    a job of another shard is refused (two shards' masters sharing a worker
    would be a deployment error).
    """

    shard: tuple[int, int] | None = None

    def aggregate(self, message: bytes) -> bytes:
        job = wire.read(message)
        shard, shards = int(job["shard"]), int(job["shards"])
        if self.shard is None:
            self.shard = (shard, shards)
        elif self.shard != (shard, shards):
            raise ValueError(
                f"shard {shard}/{shards} sent to the worker of {self.shard[0]}/{self.shard[1]}"
            )
        rows = wire.valuations(job["results"])
        for v in rows:
            if shard_of((v.book, v.currency), shards) != shard:
                raise ValueError(f"{v.position_id}: key {v.book}|{v.currency} is not in shard")
        state = self._state(job["cluster"])
        store = Store(state.client, job["run"], state.prefix)
        with state.translate("apply aggregates"):
            applied = store.apply(rows)
        return wire.aggregation_reply(len(rows), applied)
