"""What runs: the jobs of each benchmark, their sizes per mode, and where each one runs.

A job is one case module run in one interpreter ("palm": the interpreter running the
suite; "peers": .peers-venv; "pylm": .pylm-venv). Heavy peers are skipped in quick mode.
"""

from __future__ import annotations

from dataclasses import dataclass

from benchmarks.cases import http_edge
from benchmarks.cases.engines import ENGINES
from benchmarks.cases.palm_cases import HANDLERS as PALM_HANDLERS
from benchmarks.cases.raw_zmq import VARIANTS as RAW_VARIANTS
from benchmarks.launcher import Placeholder

BENCHES = ("throughput", "latency", "tiny", "factorial", "http", "memory", "mastr")

#: throughput at large payloads: 1 MiB jobs
LARGE_PAYLOAD = 2**20
PALM_PARALLEL = PALM_HANDLERS["bytes"][1]
PYLM_PARALLEL = "pylm 0.14.4: Client -> Master -> 2 workers"
RAW_REQREP = "raw pyzmq REQ/REP"
PALM_REQREP = "palm standalone Server/Client"
PALM_PARALLEL_CURVE = f"{PALM_PARALLEL}, CURVE"
#: the method of each stream subject, by key
STREAM_METHODS = dict([*PALM_HANDLERS.values(), *RAW_VARIANTS.values()])
PALM_REQREP_CURVE = f"{PALM_REQREP}, CURVE"
PALM_MEMORY = "palm: ParallelClient -> Master -> 2 workers, 100 B items"


@dataclass(frozen=True)
class Sizes:
    runs: int
    messages: int
    requests: int
    tasks: int
    items_n100: tuple[int, ...]
    items_n1000: tuple[int, ...]
    n_sweep: tuple[int, ...]
    n_sweep_items: int
    memory_items: int
    memory_runs: int
    factorial_budget_s: float
    #: how long a short point's (or tiny row's) runs go on (None: the case's default)
    short_s: float | None = None

    def factorial_points(self) -> list[tuple[int, int]]:
        points = [(100, size) for size in self.items_n100]
        points += [(1000, size) for size in self.items_n1000]
        points += [(n, self.n_sweep_items) for n in self.n_sweep]
        return list(dict.fromkeys(points))


DECADES_5 = (10**2, 10**3, 10**4, 10**5)
SIZES = {
    "quick": Sizes(1, 10_000, 1_000, 1_000, (10**2, 10**3, 10**4), (10**2, 10**3),
                   (100, 500, 1000, 1500), 10**3, 10**6, 1, 30, 0.2),
    "default": Sizes(3, 1_000_000, 10_000, 10_000, DECADES_5, DECADES_5,
                     (100, 500, 1000, 1500), 10**5, 10**7, 3, 300),
    "full": Sizes(3, 1_000_000, 10_000, 10_000, (*DECADES_5, 10**6), (*DECADES_5, 10**6),
                  (100, 500, 1000, 1500), 10**5, 10**7, 3, 7200),
}  # fmt: skip


@dataclass(frozen=True)
class Job:
    bench: str
    env: str
    module: str
    args: tuple[str, ...]
    placeholders: tuple[Placeholder, ...]
    timeout_s: float
    heavy: bool = False


def _message_job(
    bench: str,
    env: str,
    module: str,
    key: str,
    method: str,
    args: list[str],
    timeout_s: float,
    heavy: bool = False,
    bench_flag: bool = True,
    params: dict[str, object] | None = None,
) -> Job:
    if bench == "latency":
        stats = (("p50", "us", "lower"), ("p99", "us", "lower"), ("rate", "req/s", "higher"))
        holders = [Placeholder(bench, key, method, unit, better, params={"stat": stat})
                   for stat, unit, better in stats]  # fmt: skip
    else:
        holders = [Placeholder(bench, key, method, "msg/s", "higher", params=params or {})]
    flag = ["--bench", bench] if bench_flag else []
    return Job(bench, env, module, (*flag, *args), tuple(holders), timeout_s, heavy)


def _requests_job(args: list[str]) -> Job:
    """raw REQ/REP and palm's standalone Server/Client up at once, timed in turn
    (benchmarks.cases.requests), as the latency target compares them."""
    stats = (("p50", "us", "lower"), ("p99", "us", "lower"), ("rate", "req/s", "higher"))
    holders = tuple(Placeholder("latency", key, method, unit, better, params={"stat": stat})
                    for key, method in (("raw", RAW_REQREP), ("palm", PALM_REQREP))
                    for stat, unit, better in stats)  # fmt: skip
    return Job("latency", "palm", "benchmarks.cases.requests", ("--subjects", "raw,palm", *args),
               holders, 300)  # fmt: skip


_LOCAL_ENGINES = ("local", "pool", "pool-map1", "pool-map", "ppe", "palm", "palm-auto")

#: The tiny task engines, one job per group: the engines of a group are up at once and
#: timed in turn, run by run, so each palm row and the Pool rows its target compares it
#: with see the same spells of a shared machine.
TINY_GROUPS = (("pool", "pool-map1", "palm"), ("pool-map", "palm-auto"), ("ppe",), ("dask",),
               ("ray",), ("celery",), ("rq",))  # fmt: skip

#: The factorial map engines, grouped as :data:`TINY_GROUPS`: palm with the local loop
#: and the Pools its targets compare it with.
FACTORIAL_GROUPS = (("local", "pool", "pool-map", "palm"), ("dask",), ("ray",), ("celery",))


#: The stream subjects measured in turn in one job (benchmarks.cases.streams): palm and
#: every raw broker at 100 B; palm (bytes and memoryview handlers) and the per-message
#: raw brokers at 1 MiB.
STREAMS_100B = ("palm", "raw", "raw-copy", "raw-batched", "raw-oneway")
STREAMS_LARGE = ("palm", "palm-view", "palm-inline", "raw", "raw-copy")


def _streams_job(
    keys: tuple[str, ...], args: list[str], runs: int, params: dict[str, object] | None = None
) -> Job:
    holders = tuple(Placeholder("throughput", key, STREAM_METHODS[key], "msg/s", "higher",
                                params=params or {}) for key in keys)  # fmt: skip
    args = ["--subjects", ",".join(keys), *args, "--runs", str(runs)]
    return Job("throughput", "palm", "benchmarks.cases.streams", tuple(args), holders, 900.0)


def _engine_job(bench: str, keys: tuple[str, ...], sizes: Sizes) -> Job:
    env = "palm" if all(key in _LOCAL_ENGINES for key in keys) else "peers"
    runs = str(sizes.runs)
    if bench == "tiny":
        holders = tuple(
            Placeholder(bench, key, ENGINES[key].tiny_label or ENGINES[key].label, "tasks/s",
                        "higher", size=sizes.tasks)
            for key in keys
        )  # fmt: skip
        args: tuple[str, ...] = ("--count", str(sizes.tasks))
        timeout_s = 900.0 * len(keys)
    else:
        points = sizes.factorial_points()
        holders = tuple(
            Placeholder(bench, key, ENGINES[key].label, "s", "lower", size=size, params={"n": n})
            for key in keys
            for n, size in points
        )
        args = ("--points", ",".join(f"{n}x{size}" for n, size in points))
        args += ("--budget-s", str(sizes.factorial_budget_s))  # per engine
        # The budget is checked between points, so one point may overrun it.
        timeout_s = 300.0 + 3 * sizes.factorial_budget_s * len(keys)
    if sizes.short_s is not None:
        args += ("--short-s", str(sizes.short_s))
    return Job(
        bench, env, "benchmarks.cases.engines",
        ("--engine", ",".join(keys), "--bench", bench, *args, "--runs", runs),
        holders, timeout_s, heavy=env == "peers",
    )  # fmt: skip


def jobs(mode: str) -> list[Job]:
    sizes = SIZES[mode]
    runs = ["--runs", str(sizes.runs)]
    messages = ["--count", str(sizes.messages), *runs]
    requests = ["--count", str(sizes.requests), *runs]
    palm, pylm = "benchmarks.cases.palm_cases", "benchmarks.cases.pylm_echo"
    large_count = 200 if mode == "quick" else 2_000
    stream_runs = 1 if mode == "quick" else 5
    at_large = {"payload": LARGE_PAYLOAD}
    out = [
        _streams_job(STREAMS_100B, ["--count", str(sizes.messages)], stream_runs),
        _streams_job(STREAMS_LARGE, ["--count", str(large_count),
                                     "--payload-bytes", str(LARGE_PAYLOAD)], stream_runs,
                     params=at_large),
        # pylm's case takes no --bench flag: it measures throughput only.
        _message_job("throughput", "pylm", pylm, "pylm", PYLM_PARALLEL, messages, 300, True, False),
        _requests_job(requests),
        # the same with CurveZMQ on every socket: what encryption and ZAP cost
        _message_job("throughput", "palm", palm, "palm-curve", PALM_PARALLEL_CURVE,
                     [*messages, "--curve"], 300),
        _message_job("latency", "palm", palm, "palm-curve", PALM_REQREP_CURVE,
                     [*requests, "--curve"], 180),
    ]  # fmt: skip
    out += [_engine_job("tiny", group, sizes) for group in TINY_GROUPS]
    out += [_engine_job("factorial", group, sizes) for group in FACTORIAL_GROUPS]
    http_holders = tuple(
        Placeholder(r.bench, r.key, r.method, r.unit, r.better, r.size, r.params)
        for r in http_edge.placeholder_rows()
    )
    positions = 2_000 if mode == "quick" else 20_000
    mastr_holders = tuple(
        Placeholder("mastr", key, label, "positions/s", "higher", positions)
        for key, label in (("local", "single loop"), ("pool", "multiprocessing.Pool(2)"),
                           ("palm", "mastr on palm"))
    )  # fmt: skip
    mastr_args = ("--positions", str(positions), "--runs", str(sizes.runs))
    out.append(Job("mastr", "palm", "benchmarks.cases.mastr_case", mastr_args, mastr_holders, 600))
    duration_s = 2 if mode == "quick" else 10
    http_args = ("--runs", str(sizes.runs), "--duration-s", str(duration_s))
    http_timeout_s = 180.0 + 4 * (sizes.runs + 1) * (duration_s + 5)
    out.append(
        Job("http", "palm", "benchmarks.cases.http_edge", http_args, http_holders, http_timeout_s)
    )
    memory_args = ("--bench", "memory", "--count", str(sizes.memory_items),
                   "--runs", str(sizes.memory_runs))  # fmt: skip
    memory_holders = tuple(
        Placeholder("memory", "palm", PALM_MEMORY, unit, better, sizes.memory_items, {"process": p})
        for p, unit, better in (("master", "MiB", "lower"), ("client", "MiB", "lower"),
                                ("stream", "msg/s", "higher"))
    )  # fmt: skip
    memory_timeout_s = 120.0 + sizes.memory_runs * sizes.memory_items / 5_000
    out.append(Job("memory", "palm", palm, memory_args, memory_holders, memory_timeout_s))
    return out
