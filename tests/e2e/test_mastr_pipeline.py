"""mastr end to end: real palm masters and workers, a real redis-server, real SIGKILLs.

Every process is started through the ``procs`` fixture (``palm master`` and
``python -m palm.ops.worker_process``) and killed by PID at teardown; Redis is the
``redis_proc`` fixture's redis-server.
"""

from __future__ import annotations

import math
import os
import signal
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import pytest

from examples.mastr import generate
from examples.mastr.aggregate import aggregate, compare, gross_aggregates, value_all
from examples.mastr.client import (
    AggregationClient,
    Deployment,
    MasterAddresses,
    RunResult,
    value_portfolio,
)
from examples.mastr.schema import Portfolio, validate_portfolio
from examples.mastr.service import AGGREGATION_WORKER, VALUATION_WORKER
from palm.call.request import Client
from tests.fixtures.procs import Processes

if TYPE_CHECKING:
    from tests.fixtures.redis import RedisProcess

pytestmark = pytest.mark.timeout(240)

HEARTBEAT = ("--heartbeat-interval-s", "0.2")
SHARDS = 2


@dataclass
class Mastr:
    """A mastr deployment made of processes the test owns."""

    procs: Processes
    deployment: Deployment
    ready: dict[str, dict[str, Any]]
    workers: dict[str, list[subprocess.Popen[str]]] = field(default_factory=dict)

    def add_worker(self, role: str, spec: str, master: str) -> subprocess.Popen[str]:
        group = self.workers.setdefault(role, [])
        proc = self.procs.worker(spec, f"{role}-{len(group)}", self.ready[master], *HEARTBEAT)
        group.append(proc)
        return proc

    def kill(self, role: str) -> int:
        """SIGKILL the first live worker of ``role``; returns its PID."""
        proc = next(p for p in self.workers[role] if p.poll() is None)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(10)
        return proc.pid

    def wait_ready(self, timeout_s: float = 30.0) -> None:
        """Every master answers ``ping`` through one of its workers."""
        for master in (self.deployment.valuation, *self.deployment.shards):
            with master.client(timeout_s=timeout_s) as client:
                assert list(client.job("ping", [b"ping"], messages=1)) == [b"pong"]


@pytest.fixture
def mastr(
    procs: Processes, redis_proc: RedisProcess, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Mastr]:
    monkeypatch.setenv("PALM_REDIS_URL", redis_proc.url)  # what the workers read
    names = ["mastr-value", *(f"mastr-agg-{i}" for i in range(SHARDS))]
    ready = {name: procs.master(name, *HEARTBEAT)[1] for name in names}
    deployment = Deployment(
        MasterAddresses.from_ready(ready["mastr-value"]),
        tuple(MasterAddresses.from_ready(ready[n]) for n in names[1:]),
        redis_proc.url,
    )
    running = Mastr(procs, deployment, ready)
    for _ in range(2):
        running.add_worker("value", VALUATION_WORKER, "mastr-value")
    for i in range(SHARDS):
        running.add_worker(f"agg{i}", AGGREGATION_WORKER, f"mastr-agg-{i}")
    running.wait_ready()
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

    def __init__(self, portfolio: Portfolio, deployment: Deployment, run: str, batch: int) -> None:
        self.result: RunResult | None = None
        self.error: BaseException | None = None

        def target() -> None:
            try:
                self.result = value_portfolio(portfolio, deployment, run=run, batch_size=batch)
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


def _stats(master: MasterAddresses) -> dict[str, int]:
    with Client(master.db, master.name, timeout_s=10) as probe:
        stats = probe.info()["stats"]
    assert isinstance(stats, dict)
    return stats


def _wait_for_count(reader: AggregationClient, at_least: int, timeout_s: float) -> int:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        count = reader.partial().count
        if count >= at_least:
            return count
        time.sleep(0.01)
    raise AssertionError(f"fewer than {at_least} positions aggregated after {timeout_s} s")


def test_final_aggregates_equal_the_single_process_reference(mastr: Mastr) -> None:
    portfolio = _portfolio(3000, seed=7)
    result = value_portfolio(portfolio, mastr.deployment, run="ref", batch_size=128)
    assert result.valued == 3000 and result.invalid == []
    reader = AggregationClient(mastr.deployment.redis_url, "ref")
    final = reader.final(timeout_s=10)
    assert final.done and final.expected == 3000
    _check_against_reference(portfolio, final.aggregates)


def test_partial_aggregates_read_mid_run_are_sums_over_growing_subsets(mastr: Mastr) -> None:
    n = 20000
    portfolio = _portfolio(n, seed=8)
    by_id = {v.position_id: v for v in value_all(portfolio)}
    run = _Background(portfolio, mastr.deployment, "partial", batch=100)
    reader = AggregationClient(mastr.deployment.redis_url, "partial")
    snapshots = []
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        snap = reader.partial(with_ids=True)
        snapshots.append(snap)
        if snap.done:
            break
    run.join(60)
    mid = [s for s in snapshots if 0 < s.count < n and not s.done]
    assert mid, "no snapshot was taken while the run was in progress"
    previous: dict[Any, frozenset[str]] = {}
    last_count = 0
    for snap in snapshots:
        assert snap.ids is not None
        assert snap.count >= last_count  # the total only ever grows
        last_count = snap.count
        for key, agg in snap.aggregates.items():
            ids = snap.ids[key]
            assert agg.count == len(ids)
            assert previous.get(key, frozenset()) <= ids  # each key's subset only grows
            previous[key] = ids
            for name in ("pv", "pv_reporting", "delta", "dv01", "vega"):
                exact = math.fsum(getattr(by_id[i], name) for i in ids)
                gross = math.fsum(abs(getattr(by_id[i], name)) for i in ids)
                assert abs(agg.sums[name] - exact) <= 1e-9 * max(gross, 1e-300)
    _check_against_reference(portfolio, reader.final(timeout_s=10).aggregates)


def test_sigkilling_a_valuation_and_an_aggregation_worker_loses_and_doubles_nothing(
    mastr: Mastr,
) -> None:
    n, batch = 60000, 100
    portfolio = _portfolio(n, seed=9)
    run = _Background(portfolio, mastr.deployment, "crash", batch=batch)
    reader = AggregationClient(mastr.deployment.redis_url, "crash")
    _wait_for_count(reader, 1000, timeout_s=90)
    mastr.kill("value")
    mastr.kill("agg0")
    at_kill = reader.partial()
    assert not at_kill.done and at_kill.count < n, "the run ended before the kills"
    # every job is queued at the master from the start and each worker holds
    # two, so a worker killed this early had jobs in hand
    assert _stats(mastr.deployment.valuation)["jobs_out"] < n // batch - 4, "valuation ended"
    # shard 0's state is in Redis: a fresh worker for its master carries on
    mastr.add_worker("agg0", AGGREGATION_WORKER, "mastr-agg-0")
    result = run.join(180)
    assert result.valued == n and result.failed == []
    final = reader.final(timeout_s=10)
    assert final.count == n
    # the dead valuation worker's jobs were handed to the other one
    assert _stats(mastr.deployment.valuation)["requeued"] >= 1
    _check_against_reference(portfolio, final.aggregates)


def test_an_invalid_position_is_reported_and_the_rest_are_valued(mastr: Mastr) -> None:
    doc = generate.generate_document(1000, seed=10)
    doc["positions"][17]["instrument"]["strike"] = -5
    doc["positions"][423]["currency"] = "ZZZ"
    portfolio = validate_portfolio(doc)
    result = value_portfolio(portfolio, mastr.deployment, run="invalid")
    listed = {(item["id"], item["field"]) for item in result.invalid}
    assert listed == {("P00000017", "instrument.strike"), ("P00000423", "currency")}
    assert all(item["message"] for item in result.invalid)
    reader = AggregationClient(mastr.deployment.redis_url, "invalid")
    assert {(i["id"], i["field"]) for i in reader.invalid()} == listed
    final = reader.final(timeout_s=10)
    assert final.count == 998
    _check_against_reference(portfolio, final.aggregates)
