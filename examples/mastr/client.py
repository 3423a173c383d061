"""The two clients of mastr: one that values a portfolio, one that reads aggregates.

Data flow (one run)::

    value_portfolio --batches--> valuation master --> valuation workers (stateless)
          |  <------------------------ results ------------------------'
          '--results of shard i--> aggregation master i --> aggregation worker i --> Redis
    AggregationClient.partial() / .final()  <-------- reads the run's aggregates -- Redis

The valuation client forwards each batch of results, split by shard, to the
aggregation master that owns the shard as soon as it arrives, so aggregates
grow while valuation is still running. A run is ``done`` once every shard has
acknowledged every result sent to it.
"""

from __future__ import annotations

import queue
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from palm.standalone import ParallelClient
from palm.state import State
from tqdm import tqdm

from examples.mastr import wire
from examples.mastr.aggregate import shard_of
from examples.mastr.baseline import chunks
from examples.mastr.processes import free_port
from examples.mastr.schema import Portfolio
from examples.mastr.store import Snapshot, Store
from examples.mastr.workers import market_payload

__all__ = [
    "AggregationClient",
    "Deployment",
    "MasterAddresses",
    "RunResult",
    "value_portfolio",
]

_FEED_DEPTH = 64


@dataclass(frozen=True)
class MasterAddresses:
    """Where one palm master listens, for its clients and for its workers."""

    name: str
    pull: str
    push: str
    worker_pull: str
    worker_push: str
    db: str

    @classmethod
    def on_loopback(cls, name: str) -> MasterAddresses:
        ports = [free_port() for _ in range(5)]
        pull, push, wpull, wpush, db = (f"tcp://127.0.0.1:{p}" for p in ports)
        return cls(name, pull, push, wpull, wpush, db)

    def client(self) -> ParallelClient:
        return ParallelClient(
            push_address=self.push,
            pull_address=self.pull,
            db_address=self.db,
            server_name=self.name,
        )


@dataclass(frozen=True)
class Deployment:
    """A running mastr: the valuation master, one master per aggregation shard, Redis."""

    valuation: MasterAddresses
    shards: tuple[MasterAddresses, ...]
    redis_url: str
    cluster: str = "default"

    def state(self) -> State:
        return State(self.redis_url, self.cluster)


@dataclass
class RunResult:
    run: str
    valued: int
    invalid: list[dict[str, Any]]
    elapsed_s: float
    final: Snapshot | None = None
    failed: list[tuple[str, str]] = field(default_factory=list)


class _ShardFeed(threading.Thread):
    """Streams one shard's result batches to its aggregation master."""

    def __init__(self, addresses: MasterAddresses, on_ack: Callable[[int], None]) -> None:
        super().__init__(name=f"feed-{addresses.name}", daemon=True)
        self.addresses = addresses
        self.queue: queue.Queue[bytes | None] = queue.Queue(maxsize=_FEED_DEPTH)
        self.on_ack = on_ack
        self.sent = 0
        self.acked = 0
        self.error: BaseException | None = None

    def put(self, payload: bytes) -> None:
        if self.error is not None:
            raise RuntimeError(f"aggregation feed {self.name} failed") from self.error
        self.sent += 1
        self.queue.put(payload)

    def _jobs(self) -> Iterator[bytes]:
        return iter(self.queue.get, None)

    def run(self) -> None:
        try:
            client = self.addresses.client()
            for reply in client.job("aggregate", self._jobs()):
                received = int(wire.read(reply)["received"])
                self.acked += 1
                self.on_ack(received)
        except BaseException as exc:
            self.error = exc
            while self.queue.get() is not None:  # unblock the producer until it is done
                pass


def value_portfolio(
    portfolio: Portfolio,
    deployment: Deployment,
    run: str | None = None,
    batch_size: int = 500,
    progress: bool = False,
) -> RunResult:
    """Value every valid position and aggregate the results; returns when all are applied."""
    run = run or uuid.uuid4().hex[:12]
    started = time.perf_counter()
    state = deployment.state()
    market_key = state.set(
        market_payload(portfolio.reporting_currency, portfolio.market_doc),
        key=f"mastr:{run}:market",
    )
    store = Store(state.client, run, state.prefix)
    store.begin(len(portfolio.positions), [e.as_dict() for e in portfolio.errors])
    bar = tqdm(total=len(portfolio.positions), unit="pos", disable=not progress, smoothing=0.1)
    lock = threading.Lock()

    def on_ack(n: int) -> None:
        with lock:
            bar.update(n)

    shards = len(deployment.shards)
    feeds = [_ShardFeed(addresses, on_ack) for addresses in deployment.shards]
    for feed in feeds:
        feed.start()
    failed: list[tuple[str, str]] = []
    valued = 0
    try:
        jobs = (wire.valuation_job(market_key, c) for c in chunks(portfolio.positions, batch_size))
        n_jobs = (len(portfolio.positions) + batch_size - 1) // batch_size
        for reply in deployment.valuation.client().job("value", jobs, messages=n_jobs):
            data = wire.read(reply)
            failed.extend((str(i), str(m)) for i, m in data["failed"])
            by_shard: dict[int, list[Any]] = {}
            for row in data["results"]:
                by_shard.setdefault(shard_of((row[1], row[2]), shards), []).append(row)
            for shard, rows in by_shard.items():
                feeds[shard].put(wire.aggregation_job(run, shard, shards, rows))
            valued += len(data["results"])
            if data["failed"]:
                on_ack(len(data["failed"]))
    finally:
        for feed in feeds:
            feed.queue.put(None)
        for feed in feeds:
            feed.join()
        bar.close()
    for feed in feeds:
        if feed.error is not None:
            raise RuntimeError(f"aggregation shard {feed.addresses.name} failed") from feed.error
    if failed:
        store.record_failed([{"id": i, "field": "(valuation)", "message": m} for i, m in failed])
    store.finish()
    return RunResult(
        run=run,
        valued=valued,
        invalid=store.invalid(),
        elapsed_s=time.perf_counter() - started,
        final=store.snapshot(),
        failed=failed,
    )


class AggregationClient:
    """Reads a run's aggregates at any moment (``partial``) or once complete (``final``)."""

    def __init__(self, redis_url: str, run: str, cluster: str = "default") -> None:
        self.state = State(redis_url, cluster)
        self.store = Store(self.state.client, run, self.state.prefix)

    def partial(self, with_ids: bool = False) -> Snapshot:
        """The aggregates as they are now: each a sum over the positions applied so far."""
        with self.state.translate("read aggregates"):
            return self.store.snapshot(with_ids)

    def final(self, timeout_s: float = 600.0, poll_interval_s: float = 0.05) -> Snapshot:
        """Wait until the run is complete and return its aggregates."""
        deadline = time.monotonic() + timeout_s
        while True:
            snap = self.partial()
            if snap.done:
                return snap
            if time.monotonic() > deadline:
                raise TimeoutError(f"run {self.store.run} not complete after {timeout_s} s")
            time.sleep(poll_interval_s)

    def invalid(self) -> list[dict[str, Any]]:
        """Positions left out: invalid in the input, or failed to value."""
        return self.store.invalid()

    def close(self) -> None:
        self.state.close()
