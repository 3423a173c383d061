"""Run the benchmark suite and regenerate RESULTS.md and the plots.

    python -m benchmarks.run            # sizes up to 10^5, peers installed on first use
    python -m benchmarks.run --quick    # CI: small sizes, one run, no peer installs (< 2 min)
    python -m benchmarks.run --full     # adds 10^6 items to the factorial sweeps
    python -m benchmarks.run --only tiny --only latency

The default and --full modes write benchmarks/RESULTS.md, benchmarks/results.json and
benchmarks/plots/; --quick writes them under benchmarks/quick/ (not committed). With
--only, the other benchmarks' rows are kept from the previous results.json. Benchmarks
run one after another, never concurrently. Timing is reported, never asserted.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import psutil

from benchmarks import environments, report
from benchmarks.launcher import run_case
from benchmarks.record import Row
from benchmarks.suite import BENCHES, Job, jobs
from benchmarks.timing import cpu_share

HERE = Path(__file__).resolve().parent
SKIPPED_QUICK = "skipped in quick mode"


def _interpreters(mode: str, needed: set[str], install: bool) -> dict[str, environments.Ready]:
    ready = {"palm": environments.Ready(sys.executable)}
    for env, venv in (("peers", environments.PEERS), ("pylm", environments.PYLM)):
        if env in needed or (env == "peers" and mode != "quick"):
            ready[env] = environments.ensure(venv, install=install and mode != "quick")
    return ready


def _run_job(job: Job, mode: str, ready: dict[str, environments.Ready]) -> list[Row]:
    if job.heavy and mode == "quick":
        return [p.row(SKIPPED_QUICK) for p in job.placeholders]
    interpreter = ready[job.env]
    if interpreter.python is None:
        return [p.row(f"unavailable: {interpreter.reason}") for p in job.placeholders]
    return run_case(
        interpreter.python, job.module, list(job.args), job.timeout_s, list(job.placeholders)
    )


def _versions(ready: dict[str, environments.Ready]) -> dict[str, dict[str, str]]:
    out = {"palm": environments.versions(sys.executable, ("palm", *environments.PALM_DISTS))}
    out["palm"]["redis-server"] = environments.redis_version()
    for env, venv in (("peers", environments.PEERS), ("pylm", environments.PYLM)):
        got = ready.get(env)
        if got is not None and got.python is not None:
            out[env] = environments.versions(got.python, venv.dists)
            if got.reason:
                out[env]["install"] = got.reason
        elif got is not None:
            out[env] = {"status": got.reason}
    return out


def _plot(results_path: Path, out_dir: Path, ready: dict[str, environments.Ready]) -> str:
    """Draw the plots with the first interpreter that has matplotlib; a note saying how."""
    candidates = [r.python for key, r in ready.items() if key in ("peers", "palm") and r.python]
    for python in sorted(candidates, key=lambda p: p != ready.get("peers", ready["palm"]).python):
        done = subprocess.run(
            [python, "-m", "benchmarks.plots", str(results_path), str(out_dir)],
            capture_output=True, text=True, timeout=300,
            cwd=environments.REPO_ROOT, env=environments.case_env(),
        )  # fmt: skip
        if done.returncode == 0:
            count = len(done.stdout.split())
            where = (
                out_dir.relative_to(HERE.parent) if out_dir.is_relative_to(HERE.parent) else out_dir
            )
            return f"{count} plots in {where}/ (matplotlib, {Path(python).parent.parent.name})"
    return "plots not drawn: no interpreter with matplotlib (the peers' venv provides it)"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    size = parser.add_mutually_exclusive_group()
    size.add_argument("--quick", action="store_const", dest="mode", const="quick")
    size.add_argument("--full", action="store_const", dest="mode", const="full")
    parser.add_argument("--only", action="append", choices=BENCHES, help="repeatable")
    parser.add_argument(
        "--key", action="append", help="only these methods, e.g. palm, raw, dask (repeatable)"
    )
    parser.add_argument("--no-install", action="store_true", help="never pip install peers")
    parser.add_argument("--output", type=Path, help="directory for RESULTS.md and plots")
    parser.add_argument(
        "--report-only", action="store_true", help="redraw RESULTS.md and plots from results.json"
    )
    args = parser.parse_args(argv)
    mode = args.mode or "default"
    only = set(args.only or BENCHES)
    out_dir = args.output or (HERE / "quick" if mode == "quick" else HERE)
    out_dir.mkdir(parents=True, exist_ok=True)
    results_path = out_dir / "results.json"
    if args.report_only:
        return _write(report.load(str(results_path)), out_dir, _interpreters(mode, set(), False))

    machine = environments.machine()
    selected = [job for job in jobs(mode) if job.bench in only]
    if args.key:
        selected = [job for job in selected if any(h.key in args.key for h in job.placeholders)]
    ready = _interpreters(mode, {job.env for job in selected}, install=not args.no_install)

    # With --only/--key the rows of the methods that do not run are kept from the last pass.
    previous: dict[str, Any] = {}
    if (args.only or args.key) and results_path.exists():
        previous = report.load(str(results_path))
    rerun = {(job.bench, holder.key) for job in selected for holder in job.placeholders}
    rows = [r for r in previous.get("rows", []) if (r["bench"], r["key"]) not in rerun]
    benches = dict(previous.get("meta", {}).get("benches", {}))
    load = dict(previous.get("meta", {}).get("load", {}))
    partial = f" ({', '.join(args.key)} only; other rows from an earlier pass)" if args.key else ""
    for bench in (b for b in BENCHES if b in only):
        print(f"[bench] {bench}", file=sys.stderr)
        started = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
        before = (environments.load_average(), environments.busy_percent())
        together_before = environments.cores_together()
        times = psutil.cpu_times()
        with environments.SpeedSampler() as sampler:
            for job in (j for j in selected if j.bench == bench):
                rows += [row.to_dict() for row in _run_job(job, mode, ready)]
        steal = cpu_share(times, psutil.cpu_times(), "steal")
        after = (environments.load_average(), environments.busy_percent())
        together = {"before": together_before, "after": environments.cores_together()}
        benches[bench] = f"{started}, mode {mode}{partial}"
        load[bench] = {
            "before": list(before), "after": list(after), "steal": steal,
            "probe_ms": sampler.summary(), "probes": len(sampler.readings),
            "together": together,
        }  # fmt: skip

    meta = {
        "mode": mode,
        "machine": machine | {"load average at end (1, 5, 15 min)": environments.load_average()},
        "versions": _versions(ready),
        "benches": benches,
        "load": load,
        "notes": [],
    }
    return _write({"meta": meta, "rows": rows}, out_dir, ready)


def _write(results: dict[str, Any], out_dir: Path, ready: dict[str, environments.Ready]) -> int:
    """results.json, the plots, RESULTS.md; the targets on stdout."""
    results_path = out_dir / "results.json"
    results["meta"]["notes"] = [n for n in results["meta"].get("notes", []) if "plots" not in n]
    results_path.write_text(json.dumps(results, indent=1))
    results["meta"]["notes"].append(_plot(results_path, out_dir / "plots", ready))
    results_path.write_text(json.dumps(results, indent=1))
    report.write(results, str(out_dir / "RESULTS.md"))
    print(f"[bench] wrote {out_dir / 'RESULTS.md'}", file=sys.stderr)
    for target in report.targets([Row.from_dict(r) for r in results["rows"]]):
        print(f"{target.verdict:>5}  {target.text}: {target.measured} (required {target.required})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
