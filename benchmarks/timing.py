"""Clocks and summaries: wall time of a call, percentiles, median/min/max, and a
sampler that reads something periodically on a thread of its own."""

from __future__ import annotations

import statistics
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any, Self


def timed_s(fn: Callable[[], Any]) -> float:
    """Wall time of one call of ``fn`` in seconds."""
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def repeat_s(fn: Callable[[], Any], runs: int, warmup: int = 1) -> list[float]:
    """Call ``fn`` ``warmup`` times untimed, then ``runs`` times timed; seconds per run."""
    for _ in range(warmup):
        fn()
    return [timed_s(fn) for _ in range(runs)]


def percentile(sorted_values: Sequence[float], fraction: float) -> float:
    """Nearest-rank percentile of already sorted values (``fraction`` in 0..1)."""
    if not sorted_values:
        raise ValueError("no values")
    rank = max(0, min(len(sorted_values) - 1, round(fraction * len(sorted_values)) - 1))
    return sorted_values[rank]


def summarize(values: Sequence[float]) -> dict[str, float]:
    """Median, min and max of repeated measurements."""
    return {
        "median": statistics.median(values),
        "min": min(values),
        "max": max(values),
    }


def bounded_count(requested: int, rate_per_s: float, budget_s: float, floor: int) -> int:
    """How many items one timed run may use so that it lasts about ``budget_s`` at most."""
    if rate_per_s <= 0:
        return floor
    return max(floor, min(requested, int(rate_per_s * budget_s)))


def cpu_share(before: Any, after: Any, field: str) -> float:
    """The percent of all CPU time between two :func:`psutil.cpu_times` readings spent
    in ``field`` (``"idle"``, ``"steal"``...); 0 when no time passed or the system
    does not report that field."""
    spent = sum(after) - sum(before)
    part = getattr(after, field, 0.0) - getattr(before, field, 0.0)
    return 100.0 * part / spent if spent > 0 else 0.0


class Sampler:
    """Calls :meth:`sample` on a thread of its own, at once and then every
    ``interval_s``, for as long as the ``with`` block lasts."""

    def __init__(self, interval_s: float) -> None:
        self.interval_s = interval_s
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._run, name=type(self).__name__, daemon=True)

    def sample(self) -> None:
        raise NotImplementedError

    def _run(self) -> None:
        while True:
            self.sample()
            if self._done.wait(self.interval_s):
                return

    def __enter__(self) -> Self:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._done.set()
        self._thread.join()
