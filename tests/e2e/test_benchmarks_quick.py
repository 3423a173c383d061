"""The benchmark suite's quick mode runs end to end and reports every row.

It asserts what the report contains, never how fast anything was. Every palm row
must carry a number: a palm case that crashes, loses a message or times out is
reported ``unavailable:`` by the launcher, and that fails this test.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
SECTIONS = ("throughput", "latency", "tiny", "factorial", "http", "memory", "mastr")
NO_NUMBER = ("unavailable: ", "skipped in quick mode", "skipped: over", "not yet measured: ")


@pytest.mark.timeout(420)
def test_quick_benchmarks_report_every_row_with_a_number_or_a_reason(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "benchmarks.run", "--quick", "--output", str(tmp_path)],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=400,
    )
    assert done.returncode == 0, done.stderr[-3000:]

    results = json.loads((tmp_path / "results.json").read_text())
    rows = results["rows"]
    assert {row["bench"] for row in rows} == set(SECTIONS)
    for row in rows:
        if row["status"] == "ok":
            assert row["values"], row
            if row["unit"].startswith("cpu-us"):  # a quiet process may use no measurable CPU
                assert all(value >= 0 for value in row["values"]), row
            elif row["unit"] == "% idle":  # a stack may keep every core busy
                assert all(0 <= value <= 100 for value in row["values"]), row
            else:
                assert all(value > 0 for value in row["values"]), row
        else:
            assert row["status"].startswith(NO_NUMBER), row

    palm_rows = [row for row in rows if row["key"].startswith("palm")]
    assert palm_rows
    unmeasured = [
        (row["bench"], row["key"], row["params"], row["status"])
        for row in palm_rows
        if row["status"] != "ok"
    ]
    assert not unmeasured, unmeasured

    measured = {(row["bench"], row["key"]) for row in rows if row["status"] == "ok"}
    baselines = {
        ("throughput", "raw"),
        ("latency", "raw"),
        ("tiny", "pool"),
        ("factorial", "local"),
        ("mastr", "local"),
        ("mastr", "palm"),
    }
    assert baselines <= measured

    skipped = {row["key"] for row in rows if row["status"] == "skipped in quick mode"}
    assert {"pylm", "dask", "ray", "celery", "rq"} <= skipped

    text = (tmp_path / "RESULTS.md").read_text()
    for heading in ("## Machine", "## Versions", "## Targets", "## 1.", "## 6.", "## 7."):
        assert heading in text
    # every section says how the two cores ran together before and after it
    loads = results["meta"]["load"]
    assert set(loads) == set(SECTIONS)
    for load in loads.values():
        for when in ("before", "after"):
            reading = load["together"][when]
            assert 0 < reading["low"] <= reading["median"] <= reading["high"], load
    assert text.count("Both cores at once") == len(SECTIONS)
