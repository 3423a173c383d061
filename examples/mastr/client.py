"""The two clients of mastr: one that values a portfolio, one that reads aggregates.

Data flow (one run)::

    value_portfolio --batches--> valuation master --> valuation workers (stateless)
          |  <------------------------ results ------------------------'
          '--results of shard i--> aggregation master i --> aggregation worker i --> Redis
    AggregationClient.partial() / .final()  <-------- reads the run's aggregates -- Redis

The valuation client forwards each batch of results, split by shard, to the
aggregation master that owns the shard as soon as it arrives, so aggregates
grow while valuation is still running. Each shard's feed keeps one
aggregation job in flight and packs every result that arrived meanwhile into
the next one: under load the jobs grow, when idle a result goes out at once.
A run is ``done`` once every shard has acknowledged every result sent to it.
"""

from __future__ import annotations

import functools
import json
import queue
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

from tqdm import tqdm

from examples.mastr import wire
from examples.mastr.aggregate import shard_of
from examples.mastr.baseline import chunks
from examples.mastr.schema import Portfolio
from examples.mastr.store import Snapshot, Store
from examples.mastr.workers import market_payload
from palm.call.request import Client
from palm.standalone import ParallelClient
from palm.state.store import State

__all__ = [
    "AggregationClient",
    "Deployment",
    "MasterAddresses",
    "RunResult",
    "value_portfolio",
]

#: Result batches waiting for one shard before the valuation loop slows down.
_FEED_DEPTH = 256
#: Most results packed into one aggregation job.
_FEED_MAX_ROWS = 5_000
#: Seconds without any answer from a master before a run gives up.
_STALL_TIMEOUT_S = 120.0


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
    def from_ready(cls, ready: Mapping[str, Any]) -> MasterAddresses:
        """From the JSON line ``palm master`` prints once bound (or ``Master.bound``)."""
        return cls(
            str(ready["name"]),
            str(ready["pull"]),
            str(ready["push"]),
            str(ready["worker_pull"]),
            str(ready["worker_push"]),
            str(ready.get("db", "")),
        )

    @classmethod
    def discover(cls, db_address: str, name: str, timeout_s: float = 10.0) -> MasterAddresses:
        """Ask a running master, by its db endpoint, where its other sockets are."""
        with Client(db_address, name, timeout_s=timeout_s) as probe:
            info = probe.info()
        addresses = info["addresses"]
        assert isinstance(addresses, dict)
        return cls.from_ready({"name": info.get("name", name), **addresses})

    def client(self, **options: Any) -> ParallelClient:
        """A ParallelClient of this master (``options`` go to its constructor)."""
        options.setdefault("timeout_s", _STALL_TIMEOUT_S)
        return ParallelClient(
            push_address=self.push,
            pull_address=self.pull,
            db_address=self.db or None,
            server_name=self.name,
            **options,
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

    def to_json(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def from_json(cls, text: str) -> Deployment:
        data = json.loads(text)
        return cls(
            MasterAddresses(**data["valuation"]),
            tuple(MasterAddresses(**s) for s in data["shards"]),
            data["redis_url"],
            data.get("cluster", "default"),
        )


@dataclass
class RunResult:
    run: str
    valued: int
    invalid: list[dict[str, Any]]
    elapsed_s: float
    final: Snapshot | None = None
    failed: list[tuple[str, str]] = field(default_factory=list)


class _ShardFeed(threading.Thread):
    """Streams one shard's results to its aggregation master, one job in flight.

    ``put`` queues the rows of one valuation batch; the job stream packs all
    rows queued so far into one aggregation job when the previous one is
    acknowledged (palm's client takes a job from the iterable only when its
    window, here one job, has room).
    """

    def __init__(
        self,
        addresses: MasterAddresses,
        make_job: Callable[[list[Any]], bytes],
        on_ack: Callable[[int], None],
    ) -> None:
        super().__init__(name=f"feed-{addresses.name}", daemon=True)
        self.addresses = addresses
        self.make_job = make_job
        self.queue: queue.Queue[list[Any] | None] = queue.Queue(maxsize=_FEED_DEPTH)
        self.on_ack = on_ack
        self.error: BaseException | None = None
        self.ended = False

    def put(self, rows: list[Any]) -> None:
        if self.error is not None:
            raise RuntimeError(f"aggregation feed {self.name} failed") from self.error
        self.queue.put(rows)

    def _jobs(self) -> Iterator[bytes]:
        while not self.ended:
            first = self.queue.get()  # blocks only while nothing is waiting
            if first is None:
                self.ended = True
                return
            rows = list(first)
            while len(rows) < _FEED_MAX_ROWS:
                try:
                    more = self.queue.get_nowait()
                except queue.Empty:
                    break
                if more is None:
                    self.ended = True
                    break
                rows.extend(more)
            yield self.make_job(rows)

    def run(self) -> None:
        client = self.addresses.client(window=1, batch=1)
        try:
            for reply in client.job("aggregate", self._jobs()):
                assert isinstance(reply, bytes)  # errors raise
                self.on_ack(int(wire.read(reply)["received"]))
        except BaseException as exc:
            self.error = exc
            while not self.ended:  # unblock the producer until it is done
                self.ended = self.queue.get() is None
        finally:
            client.close()


def value_portfolio(
    portfolio: Portfolio,
    deployment: Deployment,
    run: str | None = None,
    batch_size: int = 250,
    progress: bool = False,
) -> RunResult:
    """Value every valid position and aggregate the results; returns when all are applied."""
    run = run or uuid.uuid4().hex[:12]
    started = time.perf_counter()
    state = deployment.state()
    cluster = deployment.cluster
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
    feeds = [
        _ShardFeed(
            addresses,
            functools.partial(wire.aggregation_job, cluster, run, i, shards),
            on_ack,
        )
        for i, addresses in enumerate(deployment.shards)
    ]
    for feed in feeds:
        feed.start()
    failed: list[tuple[str, str]] = []
    valued = 0
    # each payload already holds batch_size positions: one payload per message
    # spreads them evenly over the workers and streams results back early
    valuation = deployment.valuation.client(batch=1)
    try:
        jobs = (
            wire.valuation_job(cluster, market_key, c)
            for c in chunks(portfolio.positions, batch_size)
        )
        n_jobs = (len(portfolio.positions) + batch_size - 1) // batch_size
        for reply in valuation.job("value", jobs, messages=n_jobs):
            assert isinstance(reply, bytes)  # errors raise
            data = wire.read(reply)
            failed.extend((str(i), str(m)) for i, m in data["failed"])
            by_shard: dict[int, list[Any]] = {}
            for row in data["results"]:
                by_shard.setdefault(shard_of((row[1], row[2]), shards), []).append(row)
            for shard, rows in by_shard.items():
                feeds[shard].put(rows)
            valued += len(data["results"])
            if data["failed"]:
                on_ack(len(data["failed"]))
    finally:
        valuation.close()
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
    result = RunResult(
        run=run,
        valued=valued,
        invalid=store.invalid(),
        elapsed_s=time.perf_counter() - started,
        final=store.snapshot(),
        failed=failed,
    )
    state.close()
    return result


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
