"""Runs one case module in a given interpreter and turns its output into rows.

A case that crashes, times out or prints no record becomes rows whose status says
``unavailable: <reason>``, the reason being the last line it wrote on stderr (for a
missing palm API, the ImportError text). Nothing is ever left out silently.
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field

from benchmarks.environments import REPO_ROOT, case_env
from benchmarks.processes import stop
from benchmarks.record import Row, parse


@dataclass(frozen=True)
class Placeholder:
    """What a job's rows would be called, to report it when it produces none."""

    bench: str
    key: str
    method: str
    unit: str
    better: str
    size: int | None = None
    params: dict[str, object] = field(default_factory=dict)

    def row(self, status: str) -> Row:
        return Row(
            bench=self.bench,
            key=self.key,
            method=self.method,
            unit=self.unit,
            better=self.better,
            size=self.size,
            params=dict(self.params),
            status=status,
        )


def run_case(
    python: str, module: str, args: list[str], timeout_s: float, placeholders: list[Placeholder]
) -> list[Row]:
    """Run ``python -m module args``; its rows, or the placeholders marked unavailable."""
    argv = [python, "-m", module, *args]
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        proc = subprocess.Popen(
            argv, stdout=out, stderr=err, cwd=REPO_ROOT, env=case_env(), start_new_session=True
        )
        started = time.monotonic()
        try:
            proc.wait(timeout=timeout_s)
            failure = None if proc.returncode == 0 else f"exit status {proc.returncode}"
        except subprocess.TimeoutExpired:
            stop(proc)
            failure = f"timed out after {timeout_s:.0f} s"
        elapsed = time.monotonic() - started
        out.seek(0)
        err.seek(0)
        stdout = out.read().decode(errors="replace")
        stderr = err.read().decode(errors="replace")
    print(f"[bench]   {module} {' '.join(args)}: {elapsed:.1f} s", file=sys.stderr)
    rows = parse(stdout) if failure is None else None
    if rows is not None:
        return rows
    reason = _reason(stderr) or failure or "printed no result"
    if failure and failure.startswith("timed out") and failure not in reason:
        reason = f"{reason} ({failure})"
    return [p.row(f"unavailable: {reason}") for p in placeholders]


def _reason(stderr: str) -> str:
    """The most telling line of a failed case's stderr: its exception, if it raised one."""
    lines = [line.strip() for line in stderr.splitlines() if line.strip()]
    for line in reversed(lines):
        head = line.split(":", 1)[0]
        if head.endswith(("Error", "Exception", "Interrupt", "Timeout")) and " " not in head:
            return line[:300]
    return lines[-1][:300] if lines else ""
