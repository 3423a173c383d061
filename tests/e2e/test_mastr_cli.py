"""`python -m examples.mastr ...` as a user runs it: real processes, output checked."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest

from examples.mastr import generate

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.timeout(180)


def _mastr(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "examples.mastr", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=150,
    )


def test_run_prints_the_table_and_lists_the_invalid_positions(tmp_path: Path) -> None:
    chart = tmp_path / "pv.png"
    done = _mastr("run", "--positions", "1500", "--invalid", "2", "--chart", str(chart))
    assert done.returncode == 1, done.stderr  # 1: some positions were left out
    assert "TOTAL" in done.stdout and "valued 1498 positions" in done.stdout
    assert "2 position(s) left out" in done.stderr
    if importlib.util.find_spec("matplotlib") is None:
        assert "matplotlib is not installed" in done.stderr and not chart.exists()
    else:
        assert chart.read_bytes().startswith(b"\x89PNG")


def test_a_broken_line_in_a_file_is_named_and_the_rest_is_valued(tmp_path: Path) -> None:
    path = tmp_path / "p.json"
    with path.open("w") as out:
        generate.write(out, 300, seed=1)
    lines = path.read_text().splitlines()
    victim = next(i for i, line in enumerate(lines) if '"P00000042"' in line)
    lines[victim] = lines[victim].replace('"book": "', '"book": "oops, ', 1).replace("}", "", 1)
    path.write_text("\n".join(lines) + "\n")
    done = _mastr("run", "--input", str(path), "--chart", "")
    assert done.returncode == 1, done.stderr
    assert "valued 299 positions" in done.stdout
    assert "position 'P00000042': field '(json)': not valid JSON on line" in done.stderr


def test_a_document_without_usable_market_data_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "p.json"
    doc = generate.generate_document(5, seed=1)
    doc["market"]["curves"]["USD"]["compounding"] = "monthly"
    path.write_text(json.dumps(doc))
    done = _mastr("run", "--input", str(path))
    assert done.returncode == 2
    assert "market.curves.USD.compounding" in done.stderr and "monthly" in done.stderr


def test_bench_measures_the_three_methods_in_one_run() -> None:
    done = _mastr("bench", "--positions", "2000", "--repeat", "1")
    assert done.returncode == 0, done.stderr
    rows = [line for line in done.stdout.splitlines() if line.endswith("x")]
    assert [r.split("  ")[0] for r in rows] == [
        "single loop",
        "multiprocessing.Pool(2)",
        "mastr on palm (2 valuation workers, 2 shards)",
    ]
    assert all(float(r.split()[-2].replace(",", "")) > 0 for r in rows)
