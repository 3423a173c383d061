"""How the report shows the HTTP benchmark's idle-CPU rows.

The real stacks run in tests/e2e/test_benchmarks_quick.py; here the report's
handling of the rows, on made-up figures (the idle share itself:
tests/unit/test_bench_load.py).
"""

from __future__ import annotations

from benchmarks.cases.http_edge import IDLE_UNIT, STATS, placeholder_rows
from benchmarks.record import Row
from benchmarks.report import detail_table, palm_ratio


def _row(key: str, unit: str, stat: str, value: float) -> Row:
    return Row("http", key, f"{key} stack", unit, "higher", 64, {"stat": stat}, [value])


def test_the_report_draws_no_ratio_from_the_idle_rows_but_does_from_the_rates() -> None:
    rows = [
        _row("palm", "req/s", "rate", 3000.0),
        _row("palm", IDLE_UNIT, "idle CPU", 30.0),
        _row("uvicorn", "req/s", "rate", 6000.0),
        _row("uvicorn", IDLE_UNIT, "idle CPU", 1.0),
    ]
    assert palm_ratio(rows, rows[2]) == 0.5
    assert palm_ratio(rows, rows[3]) is None  # 30x would say nothing about either stack
    table = "\n".join(detail_table(rows))
    assert "uvicorn stack [idle CPU] | - | 64 | 1.0 % idle" in table
    assert "0.50x" in table


def test_a_stack_that_is_not_measured_has_every_figure_placeholder() -> None:
    rows = placeholder_rows("unavailable: wrk is not installed")
    stats = {(row.key, row.size, row.params["stat"]) for row in rows}
    assert {stat for _, _, stat in stats} == {stat for stat, _, _ in STATS}
    assert len(stats) == len(rows) == 3 * 2 * len(STATS)
