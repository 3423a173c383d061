"""RESULTS.md from the rows of a run: machine, versions, targets, one section per benchmark.

Every figure is the median of the runs with min and max beside it; the ``palm ÷ this``
column divides palm's median by the row's median (for throughput higher is better, for
times lower is better). The targets (benchmarks/targets.py) compare palm with the
strongest peer measured in the same pass and name it with its configuration.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterable
from typing import Any

from benchmarks.cases.engines import MAX_SHORT_RUNS, SHORT_POINT_S
from benchmarks.cases.http_edge import IDLE_UNIT
from benchmarks.environments import (
    BUSY_WARNING_PERCENT,
    PROBE_INTERVAL_S,
    SHARED_CORES_FACTOR,
    SHARED_WARNING_SHARE,
    SLOW_PROBE_FACTOR,
    STEAL_WARNING_PERCENT,
    TOGETHER_READINGS,
)
from benchmarks.record import OK, Row
from benchmarks.suite import SIZES
from benchmarks.targets import Target, crossover, targets
from benchmarks.timing import summarize

__all__ = ["Target", "load", "render", "targets", "write"]

TITLES = {
    "throughput": "1. Small-message (100 B) throughput, parallel round trip",
    "latency": "2. Request/reply latency, one request at a time (100 B)",
    "tiny": "3. Tiny no-op tasks, one task per item",
    "factorial": "4. PUMA Fig. 7 workload: iterative factorial map",
    "http": "5. HTTP edge",
    "memory": "6. Memory: peak RSS while streaming",
    "mastr": "7. mastr: portfolio valuation and aggregation, positions per second",
}


def median(row: Row) -> float | None:
    return summarize(row.values)["median"] if row.status == OK and row.values else None


def fmt(value: float | None, unit: str) -> str:
    if value is None:
        return "-"
    if unit in ("msg/s", "tasks/s", "req/s", "positions/s"):
        return f"{value:,.0f}"
    if unit == "s":
        return f"{value:.3g} s" if value >= 1 else f"{value * 1000:.3g} ms"
    return f"{value:,.1f}"


def fmt_ratio(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}x"


def _same_point(a: Row, b: Row) -> bool:
    sized = a.bench in ("factorial", "http")
    return a.params == b.params and (not sized or a.size == b.size)


def find(rows: Iterable[Row], bench: str, key: str, **params: Any) -> list[Row]:
    def wanted(r: Row) -> bool:
        return r.bench == bench and r.key == key

    return [r for r in rows if wanted(r) and all(r.params.get(k) == v for k, v in params.items())]


def palm_ratio(rows: list[Row], row: Row, palm_key: str = "palm") -> float | None:
    """palm's median divided by ``row``'s median, at the same point (none for a figure
    of the machine rather than of the system measured, such as its idle CPU)."""
    if row.key == palm_key or row.unit == IDLE_UNIT:
        return None
    mine = median(row)
    for other in rows:
        if other.key == palm_key and other.bench == row.bench and _same_point(other, row):
            theirs = median(other)
            if mine and theirs is not None:
                return theirs / mine
    return None


def cell(row: Row) -> str:
    """``median (min-max)`` or the row's status."""
    if row.status != OK:
        return row.status
    s = summarize(row.values)
    return f"{fmt(s['median'], row.unit)} ({fmt(s['min'], row.unit)} - {fmt(s['max'], row.unit)})"


def _table(header: list[str], lines: list[list[str]]) -> list[str]:
    out = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    out += ["| " + " | ".join(line) + " |" for line in lines]
    return out


def detail_table(rows: list[Row], palm_key: str = "palm") -> list[str]:
    header = ["method", "processes", "size", "median", "min", "max", "runs", "palm ÷ this", "notes"]
    lines = []
    for row in rows:
        label = row.method + "".join(f" [{v}]" for v in row.params.values())
        size = "-" if row.size is None else f"{row.size:,}"
        procs = "-" if row.processes is None else str(row.processes)
        if row.status != OK:
            lines.append([label, procs, size, row.status, "", "", "0", "-", row.notes])
            continue
        s = summarize(row.values)
        lines.append([
            label, procs, size,
            f"{fmt(s['median'], row.unit)} {row.unit if row.unit != 's' else ''}".strip(),
            fmt(s["min"], row.unit), fmt(s["max"], row.unit), str(len(row.values)),
            fmt_ratio(palm_ratio(rows, row, palm_key)), row.notes,
        ])  # fmt: skip
    return _table(header, lines)


# -- factorial ---------------------------------------------------------------------------------


def _sweep_lines(rows: list[Row], axis: str, fixed: dict[str, int]) -> tuple[list[int], list[str]]:
    """Pivot factorial rows over ``axis`` ("size" or "n") with the other coordinate fixed."""
    chosen = [r for r in rows if all(_coord(r, k) == v for k, v in fixed.items())]
    points = sorted({_coord(r, axis) for r in chosen})
    keys = list(dict.fromkeys(r.key for r in chosen))
    header = ["method", "processes", *[_axis_label(axis, p) for p in points]]
    body = []
    for key in keys:
        mine = {_coord(r, axis): r for r in chosen if r.key == key}
        first = next(iter(mine.values()))
        procs = max((r.processes or 0) for r in mine.values()) or "-"
        body.append(
            [first.method, str(procs), *[cell(mine[p]) if p in mine else "-" for p in points]]
        )
    ratio_lines = []
    palm = {_coord(r, axis): r for r in chosen if r.key == "palm"}
    for key in keys:
        if key == "palm":
            continue
        mine = {_coord(r, axis): r for r in chosen if r.key == key}
        ratios = []
        for p in points:
            a = median(palm[p]) if p in palm else None
            b = median(mine[p]) if p in mine else None
            ratios.append(fmt_ratio(a / b if a is not None and b else None))
        ratio_lines.append([f"palm ÷ {next(iter(mine.values())).method}", *ratios])
    note = "palm time divided by each method's (below 1 = palm faster):"
    ratio_header = ["palm ÷ method", *header[2:]]
    return points, [*_table(header, body), "", note, "", *_table(ratio_header, ratio_lines)]


def _coord(row: Row, axis: str) -> int:
    return int(row.params["n"]) if axis == "n" else int(row.size or 0)


def _axis_label(axis: str, value: int) -> str:
    return f"n={value}" if axis == "n" else f"{value:,} items"


# -- targets -----------------------------------------------------------------------------------


# -- the document ------------------------------------------------------------------------------


def render(results: dict[str, Any]) -> str:
    meta = results["meta"]
    rows = [Row.from_dict(r) for r in results["rows"]]
    # fmt: off
    lines = [
        "# palm benchmarks",
        "",
        "Generated by `python -m benchmarks.run` (do not edit by hand). Mode: "
        f"**{meta.get('mode', '?')}**. Every figure is the median of the runs shown, with min "
        "and max; peers run side by side with palm in the same pass, so compare ratios, not "
        "absolute numbers (see shared/ANCHORS.md).",
        "",
        "## Machine",
        "",
        *_table(["", ""], [[k, str(v)] for k, v in meta.get("machine", {}).items()]),
        "",
        "## Versions",
        "",
        *_table(["environment", "versions"], [
            [env, ", ".join(f"{k} {v}" for k, v in vs.items())]
            for env, vs in meta.get("versions", {}).items()
        ]),
        "",
        "## Targets: palm against the strongest peer of each measure",
        "",
        *_table(["target", "required", "measured", "result"],
                [[t.text, t.required, t.measured, t.verdict] for t in targets(rows)]),
        "",
    ]
    # fmt: on
    sizes = SIZES.get(meta.get("mode", ""))
    short_s = sizes.short_s if sizes is not None and sizes.short_s else SHORT_POINT_S
    fastest = fastest_probe(meta.get("load", {}))
    for bench, title in TITLES.items():
        mine = [r for r in rows if r.bench == bench]
        lines += [f"## {title}", ""]
        ran = meta.get("benches", {}).get(bench)
        if ran:
            lines += [f"Measured {ran}.", ""]
        lines += _load_lines(meta.get("load", {}).get(bench), fastest)
        if not mine:
            lines += ["Not run in this pass.", ""]
            continue
        if bench == "factorial":
            lines += _factorial_section(mine, short_s)
        elif bench == "throughput":
            lines += [THROUGHPUT_IN_TURN, "", *detail_table(mine), ""]
        elif bench == "tiny":
            lines += [_rerun_note("A row", short_s), "", TINY_IN_TURN, "", *detail_table(mine), ""]
        elif bench == "http":
            lines += [HTTP_IN_TURN, "", *detail_table(mine), ""]
        elif bench == "latency":
            lines += [LATENCY_IN_TURN, "", *detail_table(mine), ""]
        else:
            lines += [*detail_table(mine), ""]
    for note in meta.get("notes", []):
        lines.append(f"- {note}")
    return "\n".join(lines) + "\n"


def fastest_probe(loads: dict[str, dict[str, Any]]) -> float | None:
    """The lowest median of the speed probe over the pass's sections."""
    medians = [load["probe_ms"][0] for load in loads.values() if load.get("probe_ms")]
    return min(medians) if medians else None


def _load_lines(load: dict[str, Any] | None, fastest: float | None = None) -> list[str]:
    """The machine's load before and after a section, how fast it ran meanwhile (the
    speed probe and the hypervisor's steal, when recorded); a warning when other
    work ran or the machine was slow."""
    if not load:
        return []
    (avg_before, busy_before), (avg_after, busy_after) = load["before"], load["after"]
    out = [
        f"Machine load before: load average {avg_before}, CPUs {busy_before:.0f}% busy over "
        f"a quiet second; after: load average {avg_after}, CPUs {busy_after:.0f}% busy.",
        "",
    ]
    probe: list[float] = load.get("probe_ms", [])
    steal: float | None = load.get("steal")
    if probe and steal is not None:
        median, low, high = probe
        out += [
            f"Speed probe during the section (the CPU time of a fixed piece of Python, "
            f"read every {PROBE_INTERVAL_S:g} s, {load.get('probes', '?')} readings): median "
            f"{median:.1f} ms ({low:.1f} - {high:.1f}); the pass's fastest section: "
            f"{fastest or median:.1f} ms. The hypervisor took {steal:.1f}% of the CPU time.",
            "",
        ]
    out += _together_lines(load.get("together"))
    if max(busy_before, busy_after) > BUSY_WARNING_PERCENT:
        out += [
            f"**Warning: other load was present on the machine (CPUs over "
            f"{BUSY_WARNING_PERCENT:.0f}% busy while the suite ran nothing); wall-clock "
            "figures of this section are noisy, CPU-us per job much less so.**",
            "",
        ]
    slow = fastest is not None and probe and probe[0] > SLOW_PROBE_FACTOR * fastest
    if slow or (steal or 0.0) > STEAL_WARNING_PERCENT:
        out += [
            "**Warning: the machine ran slower during this section than in the pass's "
            "fastest one (the speed probe's median), or the hypervisor took CPU time from "
            "it: other machines on the same host were busy, and every figure, CPU-us per "
            "job included, is inflated; ratios between systems with more and fewer "
            "processes shift too.**",
            "",
        ]
    return out


def _together_lines(together: dict[str, dict[str, float] | None] | None) -> list[str]:
    """What :func:`benchmarks.environments.cores_together` read before and after a
    section, and a warning when the two cores shared one in enough of those readings."""
    if not together or not any(together.values()):
        return []
    said = [
        f"{reading['median']:.2f}x ({reading['low']:.2f} - {reading['high']:.2f}, "
        f"{reading['shared']:.0%} of readings over {SHARED_CORES_FACTOR:g}x) {when} the section"
        for when, reading in together.items()
        if reading
    ]
    out = [
        f"Both cores at once (the speed probe on each core alone, then on both together, "
        f"{TOGETHER_READINGS} times before and after the section; 1.0x is two full cores, "
        f"2.0x two that share one): together it took {', and '.join(said)}, of its time alone.",
        "",
    ]
    if any(reading and reading["shared"] >= SHARED_WARNING_SHARE for reading in together.values()):
        out += [
            "**Warning: the machine's two cores did not always run at full speed together "
            "(another machine on the same host, or two hardware threads of one core): "
            "whatever needs both cores at once (palm's master and workers, two Pool "
            "workers, the HTTP stacks) ran slower than on two full cores, and lost more "
            "against a loop on one core.**",
            "",
        ]
    return out


#: How the tiny rows that targets compare are measured (see benchmarks.suite.TINY_GROUPS).
TINY_IN_TURN = (
    "Each palm row is measured in one job with the Pool rows its target compares it "
    "with (apply_async, map(chunksize=1) and palm's map(chunksize=1); Pool.map and "
    "palm's map with default chunking): the engines are up at once and timed in turn, "
    "run by run, so a slow spell of the machine falls on them alike."
)

#: How the stream rows that targets compare are measured (benchmarks.suite.STREAMS_100B).
THROUGHPUT_IN_TURN = (
    "palm and the raw pyzmq brokers are measured in one job per payload size (100 B: "
    "palm and every raw variant; 1 MiB: palm with both handlers and the per-message "
    "brokers), all up at once, their runs taken in turn, run by run, so a slow spell of "
    "the machine falls on them alike; pylm and palm with CURVE run in jobs of their own."
)

#: How the request/reply rows the target compares are measured (benchmarks.cases.requests).
LATENCY_IN_TURN = (
    "raw REQ/REP and palm's standalone Server/Client are measured in one job, both up at "
    "once, each run's calls made in turns of 500 (the order reversed every other run), so "
    "a slow spell of the machine falls on both alike; palm with CURVE runs in a job of its "
    "own."
)

#: How the HTTP rows are measured (benchmarks.cases.http_edge).
HTTP_IN_TURN = (
    "The stacks are up at once and wrk drives them in turn, run by run. Each stack's "
    "[idle CPU] row is the share of the machine's CPU time that went idle during its "
    "runs: a stack that leaves the cores idle is bound by its round trips, not by its "
    "CPU per request."
)

#: How the factorial rows that targets compare are measured (benchmarks.suite.FACTORIAL_GROUPS).
FACTORIAL_IN_TURN = (
    "palm, the local loop and both Pools are measured in one job, up at once, each point's "
    "runs taken in turn, run by run, so a slow spell of the machine falls on them alike; "
    "Dask, Ray and Celery run in jobs of their own."
)


def _rerun_note(what: str, short_s: float) -> str:
    return (f"{what} whose runs take under {short_s:g} s together is run again, up to "
            f"{MAX_SHORT_RUNS} times, for every engine alike, so that the runs a busy "
            "scheduler delayed do not decide its median.")  # fmt: skip


def _factorial_section(rows: list[Row], short_s: float = SHORT_POINT_S) -> list[str]:
    out = ["Wall time with the pool or cluster already up; peers get 8 chunk tasks. "
           + _rerun_note("A point", short_s), "", FACTORIAL_IN_TURN, ""]  # fmt: skip
    for n in sorted({int(r.params["n"]) for r in rows}):
        sizes = {r.size for r in rows if r.params["n"] == n}
        if len(sizes) < 2:
            continue
        _, table = _sweep_lines(rows, "size", {"n": n})
        since, largest = crossover(rows, n)
        where = (f"palm beats the local loop from {since:,} items on" if since
                 else f"palm does not beat the local loop up to {largest:,} items"
                 if largest else "crossover not measured")  # fmt: skip
        out += [f"### factorial({n}) over data size", "", *table, "", f"Crossover: {where}.", ""]
    n_per_size = {s: {r.params["n"] for r in rows if r.size == s} for s in {r.size for r in rows}}
    sweep_sizes = sorted(s or 0 for s, ns in n_per_size.items() if len(ns) > 2)
    for size in sweep_sizes:
        _, table = _sweep_lines(rows, "n", {"size": size or 0})
        out += [f"### factorial(n) at {size:,} items", "", *table, ""]
    return out


#: A section another script writes into RESULTS.md (``benchmarks.chatbox``),
#: between ``<!-- name:begin -->`` and ``<!-- name:end -->``: kept when the suite
#: regenerates the file.
KEPT_SECTION = re.compile(r"<!-- ([\w-]+):begin -->.*?<!-- \1:end -->\n?", re.DOTALL)


def write(results: dict[str, Any], path: str) -> None:
    kept: list[str] = []
    if os.path.exists(path):
        with open(path) as handle:
            kept = [match.group(0) for match in KEPT_SECTION.finditer(handle.read())]
    text = render(results)
    if kept:
        text = text.rstrip("\n") + "\n\n" + "\n".join(block.rstrip("\n") + "\n" for block in kept)
    with open(path, "w") as handle:
        handle.write(text)


def load(path: str) -> dict[str, Any]:
    with open(path) as handle:
        return dict(json.load(handle))
