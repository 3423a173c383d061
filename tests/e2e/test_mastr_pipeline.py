"""mastr end to end: real palm masters and workers, a real redis-server, real SIGKILLs."""

from __future__ import annotations

import math
import os
import signal
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest

standalone = pytest.importorskip("palm.standalone")
if not hasattr(standalone, "ParallelClient"):
    pytest.skip("palm.standalone has no Master/Worker/ParallelClient yet", allow_module_level=True)

from examples.mastr import generate  # noqa: E402
from examples.mastr.aggregate import (  # noqa: E402
    aggregate,
    compare,
    gross_aggregates,
    value_all,
)
from examples.mastr.client import AggregationClient, RunResult, value_portfolio  # noqa: E402
from examples.mastr.cluster import LocalMastr  # noqa: E402
from examples.mastr.processes import RedisProcess  # noqa: E402
from examples.mastr.schema import Portfolio, validate_portfolio  # noqa: E402

pytestmark = pytest.mark.timeout(180)


@pytest.fixture(scope="module")
def redis_url() -> Iterator[str]:
    with RedisProcess() as server:
        yield server.url


@pytest.fixture
def cluster(redis_url: str) -> Iterator[LocalMastr]:
    with LocalMastr(workers=2, shards=2, redis_url=redis_url) as running:
        yield running


def _portfolio(n: int, seed: int, invalid: int = 0) -> Portfolio:
    return validate_portfolio(generate.generate_document(n, seed, invalid))


def _check_against_reference(portfolio: Portfolio, aggregates: Any) -> None:
    valuations = value_all(portfolio)
    problems = compare(aggregates, aggregate(valuations), gross_aggregates(valuations), rel=1e-9)
    assert problems == []
    assert sum(a.count for a in aggregates.values()) == len(portfolio.positions)


class _Background:
    """Runs value_portfolio in a thread; result or error collected."""

    def __init__(self, portfolio: Portfolio, cluster: LocalMastr, run: str, batch: int) -> None:
        assert cluster.deployment is not None
        self.result: RunResult | None = None
        self.error: BaseException | None = None

        def target() -> None:
            try:
                self.result = value_portfolio(
                    portfolio, cluster.deployment, run=run, batch_size=batch
                )
            except BaseException as exc:
                self.error = exc

        self.thread = threading.Thread(target=target, daemon=True)
        self.thread.start()

    def join(self, timeout_s: float) -> RunResult:
        self.thread.join(timeout_s)
        assert not self.thread.is_alive(), "the run did not finish in time"
        if self.error is not None:
            raise self.error
        assert self.result is not None
        return self.result


def _wait_for_count(reader: AggregationClient, at_least: int, timeout_s: float) -> int:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        count = reader.partial().count
        if count >= at_least:
            return count
        time.sleep(0.01)
    raise AssertionError(f"fewer than {at_least} positions aggregated after {timeout_s} s")


def test_final_aggregates_equal_the_single_process_reference(
    cluster: LocalMastr, redis_url: str
) -> None:
    portfolio = _portfolio(3000, seed=7)
    assert cluster.deployment is not None
    result = value_portfolio(portfolio, cluster.deployment, run="ref", batch_size=128)
    assert result.valued == 3000 and result.invalid == []
    reader = AggregationClient(redis_url, "ref")
    final = reader.final(timeout_s=10)
    assert final.done and final.expected == 3000
    _check_against_reference(portfolio, final.aggregates)


def test_partial_aggregates_read_mid_run_are_sums_over_growing_subsets(
    cluster: LocalMastr, redis_url: str
) -> None:
    portfolio = _portfolio(20000, seed=8)
    by_id = {v.position_id: v for v in value_all(portfolio)}
    run = _Background(portfolio, cluster, "partial", batch=100)
    reader = AggregationClient(redis_url, "partial")
    snapshots = []
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        snap = reader.partial(with_ids=True)
        snapshots.append(snap)
        if snap.done:
            break
    run.join(60)
    mid = [s for s in snapshots if 0 < s.count < 20000 and not s.done]
    assert mid, "no snapshot was taken while the run was in progress"
    previous: dict[Any, frozenset[str]] = {}
    for snap in snapshots:
        assert snap.ids is not None
        for key, agg in snap.aggregates.items():
            ids = snap.ids[key]
            assert agg.count == len(ids)
            assert previous.get(key, frozenset()) <= ids  # counts only ever grow
            previous[key] = ids
            for field in ("pv", "dv01", "vega"):
                exact = math.fsum(getattr(by_id[i], field) for i in ids)
                gross = math.fsum(abs(getattr(by_id[i], field)) for i in ids)
                assert abs(agg.sums[field] - exact) <= 1e-9 * max(gross, 1e-300)
    _check_against_reference(portfolio, reader.final(timeout_s=10).aggregates)


def test_sigkilling_a_valuation_and_an_aggregation_worker_loses_and_doubles_nothing(
    cluster: LocalMastr, redis_url: str
) -> None:
    portfolio = _portfolio(30000, seed=9)
    run = _Background(portfolio, cluster, "crash", batch=100)
    reader = AggregationClient(redis_url, "crash")
    _wait_for_count(reader, 3000, timeout_s=60)
    os.kill(cluster.pids("value-worker")[0], signal.SIGKILL)
    os.kill(cluster.pids("agg-worker-0")[0], signal.SIGKILL)
    result = run.join(150)
    assert cluster.restarts("value-worker") >= 1
    assert cluster.restarts("agg-worker-0") >= 1
    assert result.final is not None
    final = reader.final(timeout_s=10)
    _check_against_reference(portfolio, final.aggregates)


def test_an_invalid_position_is_reported_and_the_rest_are_valued(
    cluster: LocalMastr, redis_url: str
) -> None:
    doc = generate.generate_document(1000, seed=10)
    doc["positions"][17]["instrument"]["strike"] = -5
    doc["positions"][423]["currency"] = "ZZZ"
    portfolio = validate_portfolio(doc)
    assert cluster.deployment is not None
    result = value_portfolio(portfolio, cluster.deployment, run="invalid")
    listed = {(item["id"], item["field"]) for item in result.invalid}
    assert listed == {("P00000017", "instrument.strike"), ("P00000423", "currency")}
    reader = AggregationClient(redis_url, "invalid")
    assert {(i["id"], i["field"]) for i in reader.invalid()} == listed
    final = reader.final(timeout_s=10)
    assert final.count == 998
    _check_against_reference(portfolio, final.aggregates)
