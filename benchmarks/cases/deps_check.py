"""What dependency specs cost: per-task CPU with and without checking, and an env build.

``python -m benchmarks.cases.deps_check --count 20000 --rounds 4 [--base DIR]``

* the tiny-task figure (CPU microseconds per task, summed over the client, the
  master and 2 workers of a LocalCluster: ``map(inc, range(count), chunksize=1)``)
  measured in one run with spec checking on and off (``PALM_CHECK_DEPS=0``),
  rounds alternating which goes first; every map ships a new function whose spec
  names two packages, so each worker checks a spec once per map, as in real use;
* the work the spec machinery adds to every task, timed alone: the client's
  test of an answer for a dependency refusal, the worker's runnable test;
* the one-off costs: discovering a function's spec (cold, then warm) and
  checking a spec on a worker;
* with ``--base DIR`` (a checkout from before specs), a map chunk's whole
  per-task path (encode, run, vet, decode; no sockets) in both, in-process;
* building an environment for a one-package spec from a local wheelhouse
  (``pip`` or ``uv``), then finding it again.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import msgpack
import psutil
import yaml

from benchmarks.record import Row, emit


def make_inc() -> Callable[[int], int]:
    """A new ``inc`` each call (a new digest), whose spec names msgpack and PyYAML."""
    modules = (msgpack, yaml)

    def inc(x: int) -> int:
        return x + 1 if modules else x

    return inc


def _cpu(proc: psutil.Process) -> float:
    times = proc.cpu_times()
    return float(times.user + times.system)


def tiny_cpu(cluster: Any, count: int, check: bool) -> float:
    """CPU-us per task over every process, for one map with checking on or off."""
    os.environ["PALM_CHECK_DEPS"] = "1" if check else "0"
    me = psutil.Process()
    children = me.children(recursive=True)
    before = {child.pid: _cpu(child) for child in children}
    own = _cpu(me)
    results = cluster.map(make_inc(), range(count), chunksize=1)
    total = _cpu(me) - own + sum(_cpu(c) - before[c.pid] for c in children)
    if results != [x + 1 for x in range(count)]:
        raise RuntimeError("map returned wrong results")
    return total * 1e6 / count


def one_off_costs() -> dict[str, float]:
    from palm.wire import deps

    deps._owners = None  # forget the distribution table: the first map of a process
    start = time.perf_counter()
    spec = deps.discover(make_inc())
    cold = time.perf_counter() - start
    start = time.perf_counter()
    for _ in range(100):
        deps.discover(make_inc())
    warm = (time.perf_counter() - start) / 100
    deps.installed_version.cache_clear()
    start = time.perf_counter()
    deps.check(spec)
    check = time.perf_counter() - start
    return {"discover cold ms": cold * 1e3, "discover warm ms": warm * 1e3, "check ms": check * 1e3}


def per_task_machinery() -> tuple[float, int]:
    """Microseconds per task the spec machinery adds, and the bytes a spec adds per chunk.

    With the function cached on the worker, all a task's chunk does more than
    before specs is: on the worker, one test that the cached function is
    runnable here; on the client, one ``startswith`` on the answer (a
    dependency refusal?) in :class:`DependencyRetry`, which inlines the
    authentication it replaces; and the spec's bytes travel with the chunk.
    Those two operations are timed here against an empty call, interleaved,
    best of 300 short slices (on a loaded machine only the best means anything).
    """
    import timeit

    from palm.wire import deps
    from palm.wire import shipping as mapping

    secret = b"benchmark"
    digest, fn = mapping.pickle_function(make_inc())
    chunk = mapping.encode_chunk(secret, digest, fn, [1])
    answer = mapping.run_chunk(chunk, secret, {})
    mark, offset = mapping._DEP_MARK, 32 + 12
    runnable = mapping._Unrunnable
    cached: object = make_inc()
    n, best = 10_000, {"added": 1e9, "empty": 1e9}
    for _ in range(300):
        for name, call in (
            ("added", lambda: answer.startswith(mark, offset) or type(cached) is runnable),
            ("empty", lambda: None),
        ):
            best[name] = min(best[name], timeit.timeit(call, number=n))
    spec_bytes = 4 + len(deps.discover(make_inc()).to_json())
    return (best["added"] - best["empty"]) * 1e6 / n, spec_bytes


def chunk_path_against(base: Path) -> tuple[float, float]:
    """Microseconds per one-item chunk through encode, run, vet and decode: ``base``'s
    ``palm/wire/shipping.py`` (a checkout from before specs) and this one's.

    Both run in this process, interleaved, best of 300 short slices: the whole per-task path
    of a map's chunk, less the sockets.
    """
    import importlib.util
    import timeit
    from functools import partial

    from palm.wire import shipping as new
    from palm.wire.vetting import DependencyRetry

    loader = importlib.util.spec_from_file_location(
        "palm_base_shipping", base / "palm" / "wire" / "shipping.py"
    )
    assert loader is not None and loader.loader is not None
    old = importlib.util.module_from_spec(loader)
    loader.loader.exec_module(old)
    secret = b"benchmark"

    def path(mod: Any, vet: Callable[[bytes, bytes], bool], with_spec: bool) -> Callable[[], Any]:
        digest, fn = mod.pickle_function(make_inc())
        functions: dict[bytes, Any] = {}
        encode, run, decode = mod.encode_chunk, mod.run_chunk, mod.decode_answer

        def one() -> Any:
            chunk = encode(secret, digest, fn, [1])
            if with_spec:  # as the worker calls it
                answer = run(chunk, secret, functions, worker="w", elsewhere=None)
            else:
                answer = run(chunk, secret, functions)
            assert vet(chunk, answer)
            return decode(answer, 0, "f", secret=secret, chunk=chunk, verified=True)

        one()
        return one

    before = path(old, partial(old.authentic, secret), False)
    after = path(new, DependencyRetry(secret, 4).check, True)
    best = {"before": 1e9, "after": 1e9}
    for _ in range(300):  # short slices, many: the best of them escaped the machine's load
        for name, call in (("before", before), ("after", after)):
            best[name] = min(best[name], timeit.timeit(call, number=200) / 200 * 1e6)
    return best["before"], best["after"]


def build_time() -> tuple[float, float]:
    """Seconds to build a one-package environment from a local wheelhouse, then to find it."""
    from palm.ops.environments import Environments
    from palm.wire.deps import Spec
    from tests.fixtures.wheels import make_wheel

    with tempfile.TemporaryDirectory(prefix="palm-deps-bench-") as tmp:
        wheels = Path(tmp) / "wheels"
        make_wheel(wheels, "palmbenchdep", "1.0")
        envs = Environments(Path(tmp) / "envs", find_links=[str(wheels)], no_index=True)
        spec = Spec({"palmbenchdep": "1.0"})
        start = time.perf_counter()
        envs.ensure(spec)
        built = time.perf_counter() - start
        start = time.perf_counter()
        envs.ensure(spec)
        found = time.perf_counter() - start
    return built, found


def main() -> None:
    from palm.ops.cluster import LocalCluster

    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--count", type=int, default=20_000)
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument(
        "--base", type=Path, default=None, help="a checkout from before specs, to time against"
    )
    args = parser.parse_args()
    os.environ.setdefault("PALM_SECRET", "benchmark")
    os.environ.setdefault("PALM_NO_REDIS", "1")
    figures: dict[bool, list[float]] = {True: [], False: []}
    with LocalCluster(workers=2) as cluster:
        cluster.map(make_inc(), range(2_000), chunksize=1)  # warm
        for r in range(args.rounds):
            for check in (True, False) if r % 2 == 0 else (False, True):
                figures[check].append(tiny_cpu(cluster, args.count, check))
    on, off = statistics.median(figures[True]), statistics.median(figures[False])
    costs = one_off_costs()
    machinery, spec_bytes = per_task_machinery()
    built, found = build_time()
    method = "palm map, chunksize=1 (LocalCluster, 2 workers)"
    emit(
        [
            Row("deps", "checked", method, "cpu-us/task", "lower", args.count,
                values=figures[True]),
            Row("deps", "unchecked", method, "cpu-us/task", "lower", args.count,
                values=figures[False]),
            Row("deps", "env-build", "venv + install of one wheel", "s", "lower",
                values=[built]),
        ]
    )  # fmt: skip
    print(f"# tiny-task CPU-us/task: checked {on:.2f}, unchecked {off:.2f}, "
          f"overhead {100 * (on / off - 1):+.2f}% (medians of {args.rounds})")  # fmt: skip
    print("# rounds: checked " + ", ".join(f"{v:.2f}" for v in figures[True])
          + "; unchecked " + ", ".join(f"{v:.2f}" for v in figures[False]))  # fmt: skip
    print(f"# spec machinery per task: {machinery:.3f} us = {100 * machinery / on:.2f}% of the "
          f"checked tiny-task figure; a spec adds {spec_bytes} bytes to a chunk")  # fmt: skip
    print("# one-off: " + ", ".join(f"{k} {v:.3f}" for k, v in costs.items()))
    if args.base is not None:
        old, new = chunk_path_against(args.base)
        print(f"# one-item chunk, encode+run+vet+decode: before specs {old:.2f} us, "
              f"with specs {new:.2f} us ({100 * (new / old - 1):+.1f}%)")  # fmt: skip
    print(f"# environment build {built:.2f} s, found again {1e3 * found:.2f} ms")


if __name__ == "__main__":
    main()
