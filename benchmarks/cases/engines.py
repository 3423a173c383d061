"""Task engines behind one interface, and the driver that times them.

Each engine runs no-op tasks one per item (``tiny``) and the PUMA factorial map
(``factorial_map``) with its pool or cluster already up. The driver measures whatever the
launcher asks for and prints rows; the same driver serves palm, the standard library pools
and every peer, so no benchmark body is written twice.

    python -m benchmarks.cases.engines --engine pool --bench tiny --count 10000 --runs 3
    python -m benchmarks.cases.engines --engine pool-map,palm-auto --bench tiny  # in turn
    python -m benchmarks.cases.engines --engine dask --bench factorial --points 100x1000,...
"""

from __future__ import annotations

import argparse
import functools
import math
import os
import sys
import time
from pathlib import Path
from typing import Any, ClassVar

from benchmarks import workloads
from benchmarks.cases.measure import RUN_BUDGET_S, shortened_note
from benchmarks.processes import spawn, stop, tree_size
from benchmarks.record import Row, emit
from benchmarks.redis_server import RedisServer
from benchmarks.timing import bounded_count, timed_s

PEER_CHUNKS = 8
#: A factorial point (or tiny row) whose ``runs`` take less than this is run again, up to
#: :data:`MAX_SHORT_RUNS` times (every engine alike): a millisecond map's time on a
#: shared machine swings between modes (a Pool's 100-item map between 0.6 and
#: 1.3 ms), and the median of a few tens of runs lands on whichever mode those
#: runs happened to catch.
SHORT_POINT_S = 1.0
MAX_SHORT_RUNS = 500
READY_TIMEOUT_S = 60.0
TASK_TIMEOUT_S = 600.0


class Engine:
    """One way of running tasks. Subclasses set ``key``/``label`` and override what they do."""

    key: ClassVar[str]
    label: ClassVar[str]
    tiny_label: ClassVar[str] = ""

    def start(self) -> None:
        """Bring the pool or cluster up (not timed)."""

    def stop(self) -> None:
        """Tear everything down, stopping started processes by PID."""

    def tiny(self, count: int) -> None:
        raise NotImplementedError

    def factorial_map(self, items: list[int]) -> list[int]:
        raise NotImplementedError

    def _chunked(self, items: list[int], run_chunks: Any) -> list[int]:
        out: list[int] = []
        for part in run_chunks(workloads.chunks(items, PEER_CHUNKS)):
            out.extend(part)
        return out


class LocalLoop(Engine):
    key = "local"
    label = "local loop"

    def factorial_map(self, items: list[int]) -> list[int]:
        return [workloads.factorial(n) for n in items]


class MultiprocessingPool(Engine):
    key = "pool"
    label = "multiprocessing.Pool(2).map, 8 chunks"
    tiny_label = "multiprocessing.Pool(2) apply_async"

    def start(self) -> None:
        import multiprocessing

        self.pool = multiprocessing.Pool(2)

    def stop(self) -> None:
        self.pool.terminate()
        self.pool.join()

    def tiny(self, count: int) -> None:
        pending = [self.pool.apply_async(workloads.noop, (i,)) for i in range(count)]
        for result in pending:
            result.get(TASK_TIMEOUT_S)

    def factorial_map(self, items: list[int]) -> list[int]:
        chunksize = max(1, math.ceil(len(items) / PEER_CHUNKS))
        return self.pool.map(workloads.factorial, items, chunksize=chunksize)


class PoolMapOne(MultiprocessingPool):
    """Pool.map with one item per task: the like-for-like peer of palm map(chunksize=1)."""

    key = "pool-map1"
    tiny_label = "multiprocessing.Pool(2).map(chunksize=1)"

    def tiny(self, count: int) -> None:
        if len(self.pool.map(workloads.noop, range(count), chunksize=1)) != count:
            raise RuntimeError("Pool.map lost results")


class PoolMapDefault(MultiprocessingPool):
    """Pool.map with its default chunking: the peer of palm map's default chunking."""

    key = "pool-map"
    tiny_label = "multiprocessing.Pool(2).map (default chunksize)"

    label = "multiprocessing.Pool(2).map (default chunksize)"

    def tiny(self, count: int) -> None:
        if len(self.pool.map(workloads.noop, range(count))) != count:
            raise RuntimeError("Pool.map lost results")

    def factorial_map(self, items: list[int]) -> list[int]:
        return self.pool.map(workloads.factorial, items)


class ProcessPool(Engine):
    key = "ppe"
    label = "ProcessPoolExecutor(2).map"
    tiny_label = "ProcessPoolExecutor(2) submit"

    def start(self) -> None:
        from concurrent.futures import ProcessPoolExecutor

        self.executor = ProcessPoolExecutor(2)

    def stop(self) -> None:
        self.executor.shutdown(wait=True, cancel_futures=True)

    def tiny(self, count: int) -> None:
        futures = [self.executor.submit(workloads.noop, i) for i in range(count)]
        for future in futures:
            future.result(TASK_TIMEOUT_S)

    def factorial_map(self, items: list[int]) -> list[int]:
        return self._chunked(
            items, lambda parts: self.executor.map(workloads.factorial_chunk, parts)
        )


class PalmMap(Engine):
    """palm.ops.cluster.LocalCluster(workers=2) and ParallelClient.map."""

    key = "palm"
    label = "palm map (LocalCluster, 2 workers)"
    tiny_label = "palm map, chunksize=1 (LocalCluster, 2 workers)"
    chunksize: int | None = None

    def start(self) -> None:
        from palm.ops.cluster import LocalCluster  # type: ignore[import-not-found]

        self.cluster = LocalCluster(workers=2, name="bench")
        self.cluster.__enter__()
        wait_for_workers = getattr(self.cluster, "wait_for_workers", None)
        if wait_for_workers is not None:
            wait_for_workers()
        self.client = self.cluster.client()

    def stop(self) -> None:
        close = getattr(self.client, "close", None)
        if close is not None:
            close()
        self.cluster.__exit__(None, None, None)

    def tiny(self, count: int) -> None:
        results = self.client.map(workloads.noop, range(count), chunksize=1)
        if len(results) != count:
            raise RuntimeError(f"palm map returned {len(results)} of {count} results")

    def factorial_map(self, items: list[int]) -> list[int]:
        return list(self.client.map(workloads.factorial, items, chunksize=self.chunksize))


class PalmMapAuto(PalmMap):
    key = "palm-auto"
    label = "palm map (LocalCluster, 2 workers)"
    tiny_label = "palm map, default chunksize (LocalCluster, 2 workers)"

    def tiny(self, count: int) -> None:
        results = self.client.map(workloads.noop, range(count))
        if len(results) != count:
            raise RuntimeError(f"palm map returned {len(results)} of {count} results")


class Dask(Engine):
    key = "dask"
    label = "Dask LocalCluster, 2 workers, 8 chunk tasks"
    tiny_label = "Dask distributed, 2 workers"

    def start(self) -> None:
        from dask.distributed import Client, LocalCluster  # type: ignore[import-not-found]

        self.cluster = LocalCluster(
            n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None
        )
        self.client = Client(self.cluster)

    def stop(self) -> None:
        self.client.close()
        self.cluster.close()

    def tiny(self, count: int) -> None:
        futures = self.client.map(workloads.noop, range(count), pure=False)
        self.client.gather(futures)

    def factorial_map(self, items: list[int]) -> list[int]:
        def run(parts: list[list[int]]) -> list[list[int]]:
            futures = self.client.map(workloads.factorial_chunk, parts, pure=False)
            return list(self.client.gather(futures))

        return self._chunked(items, run)


class Ray(Engine):
    key = "ray"
    label = "Ray, 2 CPUs, 8 chunk tasks"
    tiny_label = "Ray, 2 CPUs"

    def start(self) -> None:
        import ray  # type: ignore[import-not-found]

        self.ray = ray
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
        self.noop = ray.remote(workloads.noop)
        self.chunk = ray.remote(workloads.factorial_chunk)

    def stop(self) -> None:
        self.ray.shutdown()

    def tiny(self, count: int) -> None:
        self.ray.get([self.noop.remote(i) for i in range(count)], timeout=TASK_TIMEOUT_S)

    def factorial_map(self, items: list[int]) -> list[int]:
        return self._chunked(
            items,
            lambda parts: self.ray.get(
                [self.chunk.remote(p) for p in parts], timeout=TASK_TIMEOUT_S
            ),
        )


class RedisBacked(Engine):
    """Engines whose broker is a redis-server this process starts and stops."""

    def start(self) -> None:
        self.redis = RedisServer().__enter__()
        os.environ["PALM_BENCH_REDIS_URL"] = self.redis.url
        self.workers: list[Any] = []

    def stop(self) -> None:
        for proc in self.workers:
            stop(proc)
        self.redis.__exit__(None, None, None)

    def _venv_tool(self, name: str) -> str:
        return str(Path(sys.executable).parent / name)

    def _wait_until(self, ready: Any, what: str) -> None:
        deadline = time.monotonic() + READY_TIMEOUT_S
        while not ready():
            if time.monotonic() > deadline:
                raise RuntimeError(f"{what} not ready after {READY_TIMEOUT_S} s")
            time.sleep(0.1)


class Celery(RedisBacked):
    key = "celery"
    label = "Celery prefork 2 + Redis, 8 chunk tasks"
    tiny_label = "Celery prefork 2 + Redis"

    def start(self) -> None:
        super().start()
        from benchmarks.cases import celery_app

        self.app = celery_app
        argv = [self._venv_tool("celery"), "-A", "benchmarks.cases.celery_app", "worker"]
        argv += ["--pool", "prefork", "--concurrency", "2", "--loglevel", "WARNING"]
        argv += ["--without-gossip", "--without-mingle", "--without-heartbeat"]
        self.workers.append(spawn(argv, env=dict(os.environ)))
        self._wait_until(lambda: bool(self.app.app.control.ping(timeout=0.5)), "celery worker")

    def _results(self, pending: list[Any]) -> list[Any]:
        """Poll each task's state (a GET each, every 10 ms): the Redis result backend's
        pub/sub wait can miss a notification and hang until its timeout."""
        deadline = time.monotonic() + TASK_TIMEOUT_S
        out = []
        for result in pending:
            while not result.ready():
                if time.monotonic() > deadline:
                    raise RuntimeError("celery tasks did not finish in time")
                time.sleep(0.01)
            if result.failed():
                raise RuntimeError(f"celery task {result.id} failed: {result.result!r}")
            out.append(result.result)
        return out

    def tiny(self, count: int) -> None:
        self._results([self.app.noop.delay(i) for i in range(count)])

    def factorial_map(self, items: list[int]) -> list[int]:
        return self._chunked(
            items, lambda parts: self._results([self.app.factorial_chunk.delay(p) for p in parts])
        )


class RQ(RedisBacked):
    key = "rq"
    label = "RQ, 2 workers + Redis, 8 chunk jobs"
    tiny_label = "RQ, 2 workers + Redis"
    queue_name = "palm-bench"

    def start(self) -> None:
        super().start()
        from redis import Redis  # type: ignore[import-not-found]
        from rq import Queue, Worker  # type: ignore[import-not-found]

        self.conn = Redis.from_url(self.redis.url)
        self.queue = Queue(self.queue_name, connection=self.conn)
        argv = [self._venv_tool("rq"), "worker", "--url", self.redis.url, self.queue_name]
        self.workers += [spawn(argv, env=dict(os.environ)) for _ in range(2)]
        self._wait_until(lambda: len(Worker.all(connection=self.conn)) >= 2, "rq workers")

    def _results(self, jobs: list[Any]) -> list[Any]:
        deadline = time.monotonic() + TASK_TIMEOUT_S
        out = []
        for job in jobs:
            while True:
                status = job.get_status(refresh=True)
                if status == "finished":
                    out.append(job.return_value())
                    break
                if status in ("failed", "stopped", "canceled"):
                    raise RuntimeError(f"rq job {job.id} {status}")
                if time.monotonic() > deadline:
                    raise RuntimeError("rq jobs did not finish in time")
                time.sleep(0.005)
        return out

    def tiny(self, count: int) -> None:
        self._results([self.queue.enqueue(workloads.noop, i) for i in range(count)])

    def factorial_map(self, items: list[int]) -> list[int]:
        return self._chunked(
            items,
            lambda parts: self._results(
                [self.queue.enqueue(workloads.factorial_chunk, p) for p in parts]
            ),
        )


_LOCAL = (LocalLoop, MultiprocessingPool, PoolMapOne, PoolMapDefault, ProcessPool, PalmMap,
          PalmMapAuto)  # fmt: skip
ENGINES: dict[str, type[Engine]] = {cls.key: cls for cls in (*_LOCAL, Dask, Ray, Celery, RQ)}


def _points(text: str) -> list[tuple[int, int]]:
    """``"100x1000,1000x100"`` -> [(n=100, items=1000), (n=1000, items=100)]."""
    out = []
    for part in text.split(","):
        n, size = part.split("x")
        out.append((int(n), int(size)))
    return out


def _tiny_rows(
    engines: list[Engine],
    count: int,
    runs: int,
    processes: dict[str, int],
    short_s: float = SHORT_POINT_S,
) -> list[Row]:
    """Each engine's tiny row (warmed up: see :func:`main`). With several engines (all
    up at once) their runs are taken in turn, run by run, so a slow spell of the
    machine falls on them alike."""
    sizes: dict[str, int] = {}
    for engine in engines:
        probe = min(count, 1_000)
        rate = probe / timed_s(functools.partial(engine.tiny, probe))
        sizes[engine.key] = bounded_count(count, rate, RUN_BUDGET_S, probe)
    times: dict[str, list[float]] = {engine.key: [] for engine in engines}

    def wanted(key: str) -> bool:
        done = times[key]
        return len(done) < runs or (sum(done) < short_s and len(done) < MAX_SHORT_RUNS)

    while any(wanted(engine.key) for engine in engines):
        for engine in engines:
            if wanted(engine.key):  # short runs: as factorial points
                run = functools.partial(engine.tiny, sizes[engine.key])
                times[engine.key].append(timed_s(run))
    return [
        Row(
            bench="tiny",
            key=engine.key,
            method=engine.tiny_label or engine.label,
            unit="tasks/s",
            better="higher",
            size=sizes[engine.key],
            values=[sizes[engine.key] / seconds for seconds in times[engine.key]],
            processes=processes[engine.key],
            notes=shortened_note(sizes[engine.key], count),
        )
        for engine in engines
    ]


def _work(point: tuple[int, int]) -> float:
    """Relative cost of a factorial point: items x n^2 (big-integer products dominate)."""
    n, size = point
    return size * max(n, 300) ** 2


def _factorial_rows(
    engines: list[Engine],
    points: list[tuple[int, int]],
    runs: int,
    budget_s: float,
    processes: dict[str, int],
    short_s: float = SHORT_POINT_S,
) -> list[Row]:
    """Time each point ``runs`` times per engine (a short one more often:
    :data:`SHORT_POINT_S`), cheapest first; points that would overrun an engine's
    ``budget_s`` (estimated from its last point measured) are reported as skipped.
    Several engines (warmed up: see :func:`main`) take their runs of a point in
    turn, run by run, so a slow spell of the machine falls on them alike."""
    rows = []
    spent = {engine.key: 0.0 for engine in engines}
    seconds_per_work = {engine.key: 0.0 for engine in engines}
    alone = len(engines) == 1
    for n, size in sorted(points, key=_work):
        items = [n] * size
        expected_last = workloads.factorial(n)
        timing: list[tuple[Engine, Row]] = []
        for engine in engines:
            row = Row(bench="factorial", key=engine.key, method=engine.label, unit="s",
                      better="lower", size=size, params={"n": n},
                      processes=processes[engine.key])  # fmt: skip
            rows.append(row)
            estimate_s = seconds_per_work[engine.key] * _work((n, size)) * runs
            if spent[engine.key] + estimate_s > budget_s:
                row.status = (
                    f"skipped: over this run's {budget_s:.0f} s budget (~{estimate_s:.0f} s)"
                )
                continue
            timing.append((engine, row))

        def wanted(row: Row) -> bool:
            return len(row.values) < runs or (
                sum(row.values) < short_s and len(row.values) < MAX_SHORT_RUNS
            )

        while any(wanted(row) for _, row in timing):
            for engine, row in timing:
                if not wanted(row):
                    continue
                start = time.perf_counter()
                out = engine.factorial_map(items)
                row.values.append(time.perf_counter() - start)
                spent[engine.key] += row.values[-1]
                if len(out) != size or out[-1] != expected_last:
                    raise RuntimeError(
                        f"{engine.key}: wrong factorial results at n={n}, {size} items"
                    )
                if alone and len(row.values) == 1:
                    # counted after the first run and the last only: walking the process
                    # tree takes over a millisecond, as long as a short run itself
                    row.processes = max(row.processes or 0, tree_size())
        for engine, row in timing:
            if alone:
                row.processes = max(row.processes or 0, tree_size())
            seconds_per_work[engine.key] = min(row.values) / _work((n, size))
    return rows


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument(
        "--engine",
        required=True,
        help=f"one of {', '.join(sorted(ENGINES))}, or several separated by commas, "
        "all up at once and measured in turn, run by run",
    )
    parser.add_argument("--bench", choices=["tiny", "factorial"], required=True)
    parser.add_argument("--count", type=int, default=10_000)
    parser.add_argument("--points", default="100x1000")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--budget-s", type=float, default=3_600.0, help="factorial: per engine")
    parser.add_argument(
        "--short-s",
        type=float,
        default=SHORT_POINT_S,
        help="a point (or tiny row) whose runs take less than this is run again",
    )
    args = parser.parse_args(argv)
    keys = args.engine.split(",")
    unknown = [key for key in keys if key not in ENGINES]
    if unknown or len(set(keys)) != len(keys):
        parser.error(f"--engine: unknown or repeated engines in {args.engine!r}")

    engines: list[Engine] = []
    ready: dict[str, float] = {}
    processes: dict[str, int] = {}
    counted = 1  # this process
    try:
        for key in keys:  # one at a time, so each one's processes can be counted
            engine = ENGINES[key]()
            engines.append(engine)
            # how long the pool or cluster took to be ready for its first task
            ready[key] = timed_s(engine.start)
            # warm-up: workers spawned, imports done
            if args.bench == "tiny":
                engine.tiny(min(args.count, 200))
            else:
                engine.factorial_map([100] * 16)
            total = tree_size()
            processes[key] = total - counted + 1  # its own processes and this one
            counted = total
        if args.bench == "tiny":
            rows = _tiny_rows(engines, args.count, args.runs, processes, args.short_s)
            rows += [
                Row(bench="tiny", key=row.key, method=row.method, unit="s", better="lower",
                    params={"stat": "ready"}, values=[ready[row.key]], processes=row.processes)
                for row in list(rows)
            ]  # fmt: skip
        else:
            points = _points(args.points)
            rows = _factorial_rows(
                engines, points, args.runs, args.budget_s, processes, args.short_s
            )
    finally:
        for engine in reversed(engines):
            engine.stop()
    emit(rows)


if __name__ == "__main__":
    main()
