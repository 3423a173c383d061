"""Two checkouts of palm measured in one run, interleaved: throughput, latency, CPU per
task and tiny tasks.

    python -m benchmarks.compare BEFORE_DIR AFTER_DIR [--rounds 3]

Each round runs every case once in each checkout (alternating which goes first), with
that checkout's own code importable, so machine noise falls on both alike. Prints the
median, min and max of each figure per checkout and the after/before ratio. Timing is
reported, never asserted.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
from pathlib import Path

from benchmarks.record import parse

HERE = Path(__file__).resolve().parent

CASES = {
    "throughput (msg/s)": (
        "benchmarks.cases.palm_cases",
        ["--bench", "throughput", "--count", "100000", "--runs", "1"],
    ),
    "latency": (
        "benchmarks.cases.palm_cases",
        ["--bench", "latency", "--count", "10000", "--runs", "1"],
    ),
    # run from this checkout's file, against each checkout's palm
    "cpu per task": (str(HERE / "cases" / "cpu_per_task.py"), ["--count", "100000"]),
    "tiny tasks (tasks/s)": (
        "benchmarks.cases.engines",
        ["--engine", "palm", "--bench", "tiny", "--count", "10000", "--runs", "1"],
    ),
}


def run(tree: Path, module: str, args: list[str]) -> dict[str, float]:
    env = dict(os.environ, PYTHONPATH=str(tree), PYTHONWARNINGS="ignore")
    target = [module] if module.endswith(".py") else ["-m", module]
    done = subprocess.run(
        [sys.executable, *target, *args],
        cwd=tree, env=env, capture_output=True, text=True, timeout=900,
    )  # fmt: skip
    out: dict[str, float] = {}
    for row in parse(done.stdout) or []:
        stat = row.params.get("stat")
        label = f"{row.unit}" + (f" {stat}" if stat else "")
        if row.values:
            out[label] = statistics.median(row.values)
    if not out:
        print(f"  {tree.name} {module}: no rows; stderr: {done.stderr[-400:]}", file=sys.stderr)
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("before", type=Path)
    parser.add_argument("after", type=Path)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    trees = {"before": args.before.resolve(), "after": args.after.resolve()}
    got: dict[tuple[str, str, str], list[float]] = {}
    for r in range(args.rounds):
        order = ["before", "after"] if r % 2 == 0 else ["after", "before"]
        for case, (module, case_args) in CASES.items():
            for which in order:
                for label, value in run(trees[which], module, case_args).items():
                    got.setdefault((case, label, which), []).append(value)
                    print(f"round {r + 1} {which:6} {case} {label}: {value:,.1f}", flush=True)
    print("\n| case | figure | before median (min-max) | after median (min-max) | after/before |")
    print("|---|---|---|---|---|")
    for case, label in dict.fromkeys((c, lab) for c, lab, _ in got):
        b, a = got.get((case, label, "before"), []), got.get((case, label, "after"), [])
        if not a or not b:
            continue
        mb, ma = statistics.median(b), statistics.median(a)
        print(
            f"| {case} | {label} | {mb:,.1f} ({min(b):,.1f}-{max(b):,.1f}) "
            f"| {ma:,.1f} ({min(a):,.1f}-{max(a):,.1f}) | {ma / mb:.2f} |"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
