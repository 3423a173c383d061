"""RESULTS.md from the rows of a run: machine, versions, targets, one section per benchmark.

Every figure is the median of the runs with min and max beside it; the ``palm ÷ this``
column divides palm's median by the row's median (for throughput higher is better, for
times lower is better). The targets are those of shared/ANCHORS.md "What palm must beat".
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from benchmarks.record import OK, Row
from benchmarks.timing import summarize

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
    """palm's median divided by ``row``'s median, at the same point."""
    if row.key == palm_key:
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


def crossover(rows: list[Row], n: int) -> tuple[int | None, int | None]:
    """(smallest size from which palm beats the local loop at every larger size, largest size)."""
    palm = {r.size: median(r) for r in find(rows, "factorial", "palm", n=n)}
    local = {r.size: median(r) for r in find(rows, "factorial", "local", n=n)}
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


# -- targets -----------------------------------------------------------------------------------


@dataclass
class Target:
    text: str
    required: str
    measured: str
    verdict: str


def _ratio_target(
    rows: list[Row], text: str, required: str, palm: list[Row], peer: list[Row],
    ok: Callable[[float], bool], note: str = "",
) -> Target:  # fmt: skip
    a = median(palm[0]) if palm else None
    b = median(peer[0]) if peer else None
    if a is None or not b:
        missing = [r.status for r in (*palm[:1], *peer[:1]) if r.status != OK]
        why = missing[0] if missing else "not measured"
        return Target(text, required, "-", f"not measured ({why})")
    ratio = a / b
    unit = palm[0].unit
    figures = f"{fmt(a, unit)} vs {fmt(b, unit)}{'' if unit == 's' else ' ' + unit}"
    measured = f"{ratio:.2f}x ({figures}){note}"
    return Target(text, required, measured, "pass" if ok(ratio) else "FAIL")


def targets(rows: list[Row]) -> list[Target]:
    out = [
        _ratio_target(rows, "parallel 100 B throughput, palm ÷ raw pyzmq broker", ">= 0.5x",
                      find(rows, "throughput", "palm"), find(rows, "throughput", "raw"),
                      lambda r: r >= 0.5),
        _ratio_target(rows, "parallel 100 B throughput, palm ÷ pylm 0.14.4", "~15x (reference)",
                      find(rows, "throughput", "palm"), find(rows, "throughput", "pylm"),
                      lambda r: r >= 1.0),
        _ratio_target(rows, "tiny tasks/s, palm map (chunksize=1) ÷ multiprocessing.Pool",
                      ">= 1.0x", find(rows, "tiny", "palm"), find(rows, "tiny", "pool"),
                      lambda r: r >= 1.0),
    ]  # fmt: skip
    sizes = sorted(r.size or 0 for r in find(rows, "factorial", "palm", n=100))
    if sizes:
        biggest = sizes[-1]
        note = "" if biggest >= 10**6 else f" (at {biggest:,} items; 10^6 needs --full)"
        out.append(_ratio_target(
            rows, "factorial(100) x 10^6 map time, palm ÷ multiprocessing.Pool.map", "<= 1.1x",
            [r for r in find(rows, "factorial", "palm", n=100) if r.size == biggest],
            [r for r in find(rows, "factorial", "pool", n=100) if r.size == biggest],
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
    out.append(_ratio_target(
        rows, "standalone req/rep p50, palm ÷ raw REQ/REP", "<= 2.0x",
        find(rows, "latency", "palm", stat="p50"), find(rows, "latency", "raw", stat="p50"),
        lambda r: r <= 2.0,
    ))  # fmt: skip
    out += http_targets(rows)
    return out


def http_targets(rows: list[Row]) -> list[Target]:
    """Throughput ratio at 10 and 64 connections, p99 at 64, and no errors."""
    out: list[Target] = []
    for connections in (10, 64):

        def at(key: str, stat: str, size: int = connections) -> list[Row]:
            return [r for r in find(rows, "http", key, stat=stat) if r.size == size]

        out.append(_ratio_target(
            rows, f"HTTP req/s at {connections} connections, Envoy + gateway + master + worker "
            "÷ Envoy -> trivial gunicorn (2 sync workers)", ">= 0.5x",
            at("palm", "rate"), at("gunicorn", "rate"), lambda r: r >= 0.5,
        ))  # fmt: skip
    p99 = [r for r in find(rows, "http", "palm", stat="p99") if r.size == 64]
    value = median(p99[0]) if p99 else None
    text = "HTTP p99 at 64 connections, palm"
    if value is None:
        out.append(Target(text, "<= 50 ms", "-", "not measured"))
    else:
        verdict = "pass" if value <= 50.0 else "FAIL"
        out.append(Target(text, "<= 50 ms", f"{value:.1f} ms", verdict))
    palm = find(rows, "http", "palm")
    if palm and all(r.status == OK for r in palm):
        dirty = sorted({r.notes for r in palm if r.notes != "no errors, no non-2xx answers"})
        out.append(Target("HTTP errors under load, palm", "none",
                          "; ".join(dirty) or "none", "FAIL" if dirty else "pass"))  # fmt: skip
    return out


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
        "## Targets (shared/ANCHORS.md, \"What palm must beat\")",
        "",
        *_table(["target", "required", "measured", "result"],
                [[t.text, t.required, t.measured, t.verdict] for t in targets(rows)]),
        "",
    ]
    # fmt: on
    for bench, title in TITLES.items():
        mine = [r for r in rows if r.bench == bench]
        lines += [f"## {title}", ""]
        ran = meta.get("benches", {}).get(bench)
        if ran:
            lines += [f"Measured {ran}.", ""]
        if not mine:
            lines += ["Not run in this pass.", ""]
            continue
        if bench == "factorial":
            lines += _factorial_section(mine)
        else:
            lines += [*detail_table(mine), ""]
    for note in meta.get("notes", []):
        lines.append(f"- {note}")
    return "\n".join(lines) + "\n"


def _factorial_section(rows: list[Row]) -> list[str]:
    out = ["Wall time with the pool or cluster already up; peers get 8 chunk tasks.", ""]
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


def write(results: dict[str, Any], path: str) -> None:
    with open(path, "w") as handle:
        handle.write(render(results))


def load(path: str) -> dict[str, Any]:
    with open(path) as handle:
        return dict(json.load(handle))
