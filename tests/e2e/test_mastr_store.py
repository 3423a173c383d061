"""mastr's Redis aggregation state against a real redis-server."""

from __future__ import annotations

import math
import random
import threading
from collections.abc import Iterator
from typing import TYPE_CHECKING

import pytest
import redis

from examples.mastr import generate
from examples.mastr.aggregate import aggregate, compare, gross_aggregates, value_all
from examples.mastr.schema import validate_portfolio
from examples.mastr.store import Store

if TYPE_CHECKING:
    from tests.fixtures.redis import RedisProcess

pytestmark = pytest.mark.timeout(60)


@pytest.fixture
def redis_url(redis_proc: RedisProcess) -> str:
    return redis_proc.url


@pytest.fixture
def client(redis_url: str) -> Iterator[redis.Redis]:
    c = redis.Redis.from_url(redis_url)
    yield c
    c.close()


def _valuations(n: int, seed: int):  # type: ignore[no-untyped-def]
    return value_all(validate_portfolio(generate.generate_document(n, seed)))


def test_applying_every_position_gives_the_reference_aggregates(client: redis.Redis) -> None:
    valuations = _valuations(400, 1)
    store = Store(client, "r1")
    store.begin(expected=len(valuations))
    for i in range(0, len(valuations), 37):
        store.apply(valuations[i : i + 37])
    snap = store.snapshot()
    assert snap.count == 400 and snap.expected == 400
    assert compare(snap.aggregates, aggregate(valuations), gross_aggregates(valuations)) == []


def test_a_position_delivered_again_is_not_counted_twice(client: redis.Redis) -> None:
    valuations = _valuations(200, 2)
    store = Store(client, "r2")
    store.begin(expected=200)
    assert store.apply(valuations[:150]) == 150
    assert store.apply(valuations[100:]) == 50
    assert store.apply(valuations) == 0
    reference = aggregate(valuations)
    assert compare(store.snapshot().aggregates, reference, gross_aggregates(valuations)) == []


def test_concurrent_writers_with_overlapping_batches_stay_exact(redis_url: str) -> None:
    valuations = _valuations(600, 3)
    Store(redis.Redis.from_url(redis_url), "r3").begin(expected=600)

    def writer(seed: int) -> None:
        rng = random.Random(seed)
        mine = valuations[:]
        rng.shuffle(mine)
        store = Store(redis.Redis.from_url(redis_url), "r3")
        for i in range(0, len(mine), 50):
            store.apply(mine[i : i + 50])

    threads = [threading.Thread(target=writer, args=(s,)) for s in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    snap = Store(redis.Redis.from_url(redis_url), "r3").snapshot()
    assert snap.count == 600
    assert compare(snap.aggregates, aggregate(valuations), gross_aggregates(valuations)) == []


def test_a_snapshot_with_ids_is_the_sum_over_exactly_those_ids(client: redis.Redis) -> None:
    valuations = _valuations(300, 4)
    by_id = {v.position_id: v for v in valuations}
    store = Store(client, "r4")
    store.begin(expected=300)
    store.apply(valuations[:120])
    snap = store.snapshot(with_ids=True)
    assert snap.ids is not None and snap.count == 120 and not snap.done
    for key, agg in snap.aggregates.items():
        ids = snap.ids[key]
        assert agg.count == len(ids)
        assert math.isclose(
            agg.sums["pv"], math.fsum(by_id[i].pv for i in ids), rel_tol=1e-12, abs_tol=1e-6
        )


def test_begin_clears_an_earlier_run_and_keeps_the_invalid_list(client: redis.Redis) -> None:
    valuations = _valuations(50, 5)
    store = Store(client, "r5")
    store.begin(expected=50)
    store.apply(valuations)
    store.begin(expected=49, invalid=[{"id": "X", "field": "book", "message": "bad"}])
    assert store.snapshot().count == 0
    assert store.invalid() == [{"id": "X", "field": "book", "message": "bad"}]
    store.finish()
    assert store.snapshot().done
