"""PNG plots in the PUMA paper's style, drawn with matplotlib from a results file.

Run in an interpreter that has matplotlib (the peers' venv):
``python -m benchmarks.plots RESULTS_JSON OUT_DIR``. Prints the files it wrote.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from benchmarks.record import OK, Row
from benchmarks.report import load
from benchmarks.timing import summarize

MARKERS = "osD^v<>ph*"


def _ok(rows: list[Row]) -> list[Row]:
    return [r for r in rows if r.status == OK and r.values]


def _series(rows: list[Row], x: Any) -> dict[str, list[tuple[float, float, float, float]]]:
    """method -> [(x, median, min, max)] sorted by x."""
    out: dict[str, list[tuple[float, float, float, float]]] = {}
    for row in rows:
        s = summarize(row.values)
        out.setdefault(row.method, []).append((x(row), s["median"], s["min"], s["max"]))
    return {k: sorted(v) for k, v in out.items()}


def _lines(
    plt: Any, series: dict[str, Any], title: str, xlabel: str, logx: bool, path: Path
) -> None:
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for index, (method, points) in enumerate(series.items()):
        xs = [p[0] for p in points]
        med = [p[1] for p in points]
        err = [[p[1] - p[2] for p in points], [p[3] - p[1] for p in points]]
        ax.errorbar(
            xs, med, yerr=err, marker=MARKERS[index % len(MARKERS)], capsize=3, label=method
        )
    ax.set_yscale("log")
    if logx:
        ax.set_xscale("log")
    ax.set_xlabel(xlabel)
    ax.set_ylabel("total latency (s)")
    ax.set_title(title)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _bars(plt: Any, rows: list[Row], title: str, ylabel: str, path: Path, log: bool) -> None:
    fig, ax = plt.subplots(figsize=(7, 4.5))
    labels = [r.method + "".join(f" {v}" for v in r.params.values()) for r in rows]
    stats = [summarize(r.values) for r in rows]
    med = [s["median"] for s in stats]
    err = [[s["median"] - s["min"] for s in stats], [s["max"] - s["median"] for s in stats]]
    colors = ["tab:red" if r.key.startswith("palm") else "tab:blue" for r in rows]
    ax.barh(range(len(rows)), med, xerr=err, color=colors, capsize=3)
    ax.set_yticks(range(len(rows)), labels, fontsize=7)
    ax.invert_yaxis()
    if log:
        ax.set_xscale("log")
    ax.set_xlabel(ylabel)
    ax.set_title(title)
    ax.grid(True, axis="x", which="both", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def draw(results_path: str, out_dir: str) -> list[Path]:
    import matplotlib  # type: ignore[import-not-found]

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # type: ignore[import-not-found]

    rows = _ok([Row.from_dict(r) for r in load(results_path)["rows"]])
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []

    factorial = [r for r in rows if r.bench == "factorial"]
    for n in sorted({int(r.params["n"]) for r in factorial}):
        mine = [r for r in factorial if r.params["n"] == n]
        if len({r.size for r in mine}) > 1:
            path = out / f"factorial_n{n}_by_items.png"
            title = f"factorial({n}) map: latency vs data size"
            _lines(plt, _series(mine, lambda r: r.size), title, "items", True, path)
            written.append(path)
    for size in sorted({r.size or 0 for r in factorial}):
        mine = [r for r in factorial if r.size == size]
        if len({r.params["n"] for r in mine}) > 2:
            path = out / f"factorial_by_n_at_{size}.png"
            _lines(plt, _series(mine, lambda r: r.params["n"]),
                   f"factorial(n) map over {size:,} items", "n", False, path)  # fmt: skip
            written.append(path)
    for bench, title, unit, log in (
        ("tiny", "tiny no-op tasks", "tasks/s", True),
        ("throughput", "100 B parallel round trips", "msg/s", True),
    ):
        mine = [r for r in rows if r.bench == bench]
        if mine:
            path = out / f"{bench}.png"
            _bars(plt, mine, title, unit, path, log)
            written.append(path)
    latency = [r for r in rows if r.bench == "latency" and r.unit == "us"]
    if latency:
        path = out / "latency.png"
        _bars(plt, latency, "request/reply latency (100 B)", "microseconds", path, False)
        written.append(path)
    return written


def main() -> None:
    for path in draw(sys.argv[1], sys.argv[2]):
        print(path)


if __name__ == "__main__":
    main()
