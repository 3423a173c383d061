"""The targets table: palm against the strongest peer of each measure, peers named.

Each target compares palm's median with the median of the best of its peers measured in
the same pass (the fastest, or the cheapest), and says which peer that was, with its
configuration, so the ratio never flatters palm by picking a weak baseline.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from benchmarks.record import OK, Row
from benchmarks.timing import summarize

__all__ = ["Target", "targets"]

#: peers of the 100 B parallel round trip (raw pyzmq brokers in their variants)
RAW_BROKERS = ("raw", "raw-copy", "raw-batched")
#: the per-message raw brokers (the peers at 1 MiB payloads)
RAW_PER_MESSAGE = ("raw", "raw-copy")
LARGE = {"payload": 2**20}


@dataclass
class Target:
    text: str
    required: str
    measured: str
    verdict: str


def median(row: Row) -> float | None:
    return summarize(row.values)["median"] if row.status == OK and row.values else None


def pick(rows: Iterable[Row], bench: str, key: str, size: int | None = None, **params: Any
         ) -> Row | None:  # fmt: skip
    """The row of ``key`` at exactly ``params`` (and ``size`` when given)."""
    for row in rows:
        same = row.bench == bench and row.key == key and row.params == params
        if same and (size is None or row.size == size):
            return row
    return None


def strongest(rows: list[Row], bench: str, keys: Iterable[str], size: int | None = None,
              **params: Any) -> Row | None:  # fmt: skip
    """The best measured row among ``keys`` (highest or lowest median, as the unit says)."""
    found = [r for k in keys if (r := pick(rows, bench, k, size, **params)) is not None]
    measured = [r for r in found if median(r) is not None]
    if not measured:
        return found[0] if found else None
    sign = 1 if measured[0].better == "higher" else -1
    return max(measured, key=lambda r: sign * (median(r) or 0.0))


def fmt(value: float, unit: str) -> str:
    if unit in ("msg/s", "tasks/s", "req/s", "positions/s"):
        return f"{value:,.0f}"
    if unit == "s":
        return f"{value:.3g} s" if value >= 1 else f"{value * 1000:.3g} ms"
    return f"{value:,.1f}"


def ratio_target(
    text: str, required: str, palm: Row | None, peer: Row | None, ok: Callable[[float], bool],
    note: str = "",
) -> Target:  # fmt: skip
    """palm's median ÷ the peer's; the peer's configuration goes into the text."""
    if peer is not None:
        text = f"{text} [peer: {peer.method}]"
    a = median(palm) if palm else None
    b = median(peer) if peer else None
    if a is None or not b:
        missing = [r.status for r in (palm, peer) if r is not None and r.status != OK]
        why = missing[0] if missing else "not measured"
        return Target(text, required, "-", f"not measured ({why})")
    ratio = a / b
    unit = palm.unit if palm else ""
    figures = f"{fmt(a, unit)} vs {fmt(b, unit)}{'' if unit == 's' else ' ' + unit}"
    return Target(text, required, f"{ratio:.2f}x ({figures}){note}",
                  "pass" if ok(ratio) else "FAIL")  # fmt: skip


def value_target(text: str, required: str, row: Row | None, ok: Callable[[float], bool],
                 show: Callable[[float], str]) -> Target:  # fmt: skip
    value = median(row) if row else None
    if value is None:
        why = row.status if row is not None and row.status != OK else "not measured"
        return Target(text, required, "-", f"not measured ({why})")
    return Target(text, required, show(value), "pass" if ok(value) else "FAIL")


def crossover(rows: list[Row], n: int) -> tuple[int | None, int | None]:
    """(smallest size from which palm beats the local loop at every larger size, largest size)."""
    palm = {r.size: median(r) for r in rows if r.bench == "factorial" and r.key == "palm"
            and r.params.get("n") == n}  # fmt: skip
    local = {r.size: median(r) for r in rows if r.bench == "factorial" and r.key == "local"
             and r.params.get("n") == n}  # fmt: skip
    sizes = sorted(s for s in palm if s in local and palm[s] is not None and local[s] is not None)
    if not sizes:
        return None, None
    since = None
    for size in reversed(sizes):
        if palm[size] < local[size]:  # type: ignore[operator]
            since = size
        else:
            break
    return since, sizes[-1]  # type: ignore[return-value]


def _messages(rows: list[Row]) -> list[Target]:
    palm = pick(rows, "throughput", "palm")
    cpu = {
        r.params["process"]: median(r)
        for r in rows
        if r.bench == "throughput" and r.key == "palm" and r.unit == "cpu-us/msg"
        and "payload" not in r.params
    }  # fmt: skip
    split = ", ".join(f"{name} {value:.2f}" for name, value in cpu.items()
                      if name != "all" and value is not None)  # fmt: skip
    return [
        ratio_target("parallel 100 B throughput, palm ÷ the strongest raw pyzmq broker",
                     ">= 0.6x", palm, strongest(rows, "throughput", RAW_BROKERS),
                     lambda r: r >= 0.6),
        ratio_target("parallel 100 B throughput, palm ÷ raw one-way PUSH -> PULL (the line)",
                     "(reference)", palm, pick(rows, "throughput", "raw-oneway"),
                     lambda r: True),
        value_target("CPU per 100 B job, palm, all processes (client + master + workers)",
                     "<= 3.0 CPU-us", pick(rows, "throughput", "palm", process="all"),
                     lambda v: v <= 3.0, lambda v: f"{v:.2f} CPU-us ({split})"),
        ratio_target("parallel 100 B throughput, palm ÷ pylm 0.14.4", "~15x (reference)",
                     palm, pick(rows, "throughput", "pylm"), lambda r: r >= 1.0),
        ratio_target("parallel 1 MiB throughput, palm (on one machine the payloads reach "
                     "the workers through the client's shared memory) ÷ the strongest "
                     "per-message raw broker",
                     ">= 1.0x", pick(rows, "throughput", "palm", **LARGE),
                     strongest(rows, "throughput", RAW_PER_MESSAGE, **LARGE),
                     lambda r: r >= 1.0),
        ratio_target("parallel 1 MiB throughput, palm with a memoryview handler (@zero_copy) "
                     "÷ the strongest per-message raw broker", "(reference)",
                     pick(rows, "throughput", "palm-view", **LARGE),
                     strongest(rows, "throughput", RAW_PER_MESSAGE, **LARGE),
                     lambda r: True),
        ratio_target("parallel 1 MiB throughput, palm with shared memory off (through the "
                     "sockets at every hop, as between machines) ÷ the strongest per-message "
                     "raw broker", "(reference)",
                     pick(rows, "throughput", "palm-inline", **LARGE),
                     strongest(rows, "throughput", RAW_PER_MESSAGE, **LARGE),
                     lambda r: True),
        ratio_target("standalone req/rep p50, palm ÷ raw REQ/REP", "<= 2.0x",
                     pick(rows, "latency", "palm", stat="p50"),
                     pick(rows, "latency", "raw", stat="p50"), lambda r: r <= 2.0),
    ]  # fmt: skip


def _tasks(rows: list[Row]) -> list[Target]:
    out = [
        ratio_target("tiny tasks/s, palm map(chunksize=1) ÷ the strongest one-task-per-item Pool",
                     ">= 1.0x", pick(rows, "tiny", "palm"),
                     strongest(rows, "tiny", ("pool", "pool-map1")), lambda r: r >= 1.0),
        ratio_target("tiny tasks/s, palm map default chunking ÷ Pool.map default chunking",
                     ">= 1.0x", pick(rows, "tiny", "palm-auto"), pick(rows, "tiny", "pool-map"),
                     lambda r: r >= 1.0),
        value_target("LocalCluster(workers=2) ready for its first map", "<= 0.5 s",
                     pick(rows, "tiny", "palm", stat="ready"), lambda v: v <= 0.5,
                     lambda v: f"{v:.2f} s"),
        ratio_target("map of 100 items of factorial(100), palm ÷ the fastest Pool(2).map",
                     "<= 1.5x", pick(rows, "factorial", "palm", 100, n=100),
                     strongest(rows, "factorial", ("pool", "pool-map"), 100, n=100),
                     lambda r: r <= 1.5),
    ]  # fmt: skip
    sizes = sorted(r.size or 0 for r in rows if r.bench == "factorial" and r.key == "palm"
                   and r.params.get("n") == 100)  # fmt: skip
    if sizes:
        biggest = sizes[-1]
        note = "" if biggest >= 10**6 else f" (at {biggest:,} items; 10^6 needs --full)"
        out.append(ratio_target(
            "factorial(100) map time, palm ÷ the fastest Pool(2).map", "<= 1.1x",
            pick(rows, "factorial", "palm", biggest, n=100),
            strongest(rows, "factorial", ("pool", "pool-map"), biggest, n=100),
            lambda r: r <= 1.1, note,
        ))  # fmt: skip
    for n, limit in ((100, 1_000), (1000, 100)):
        since, largest = crossover(rows, n)
        text = f"crossover vs local loop, factorial({n})"
        required = f"<= {limit:,} items"
        if largest is None:
            out.append(Target(text, required, "-", "not measured"))
        elif since is None:
            out.append(Target(text, required, f"never up to {largest:,} items", "FAIL"))
        else:
            verdict = "pass" if since <= limit else "FAIL"
            out.append(Target(text, required, f"palm faster from {since:,} items", verdict))
    return out


def _http(rows: list[Row]) -> list[Target]:
    out = [
        ratio_target(f"HTTP req/s at {connections} connections, palm up (Envoy + gateway + "
                     "master + worker) ÷ the strongest Envoy -> trivial app", required,
                     pick(rows, "http", "palm", connections, stat="rate"),
                     strongest(rows, "http", ("gunicorn", "uvicorn"), connections, stat="rate"),
                     lambda r, floor=floor: r >= floor)
        for connections, required, floor in ((10, ">= 0.5x", 0.5), (64, ">= 0.75x", 0.75))
    ]  # fmt: skip
    out.append(value_target("HTTP p99 at 64 connections, palm up", "<= 50 ms",
                            pick(rows, "http", "palm", 64, stat="p99"), lambda v: v <= 50.0,
                            lambda v: f"{v:.1f} ms"))  # fmt: skip
    palm = [r for r in rows if r.bench == "http" and r.key == "palm"]
    if palm and all(r.status == OK for r in palm):
        dirty = sorted({r.notes for r in palm if r.notes != "no errors, no non-2xx answers"})
        out.append(Target("HTTP errors under load, palm", "none",
                          "; ".join(dirty) or "none", "FAIL" if dirty else "pass"))  # fmt: skip
    return out


def targets(rows: list[Row]) -> list[Target]:
    """Every target of the report, in the order of its sections."""
    return [*_messages(rows), *_tasks(rows), *_http(rows)]
