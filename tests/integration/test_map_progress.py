"""``map(progress=True)`` moves as results arrive: a real master and two function
workers, items of a few milliseconds, every progress report recorded."""

from __future__ import annotations

import time
from typing import Any

import pytest

from palm.call.parallel import ParallelClient
from tests.fixtures.procs import Processes, wait_for

pytestmark = pytest.mark.timeout(120)

FAST = ("--heartbeat-interval-s", "0.2")
ITEMS = 800
ITEM_S = 0.005


def test_map_reports_progress_from_the_first_items_on_in_small_steps(procs: Processes) -> None:
    _, info = procs.master("master", *FAST)
    for i in range(2):
        procs.worker("palm.serve.worker:FunctionWorker", f"f{i}", info, *FAST)

    def workers() -> int:
        from palm.call.request import Client

        with Client(info["db"], info["name"], timeout_s=5) as probe:
            return len(probe.info()["workers"])

    wait_for(lambda: workers() >= 2)

    def slow_square(x: int) -> int:  # local: shipped by value to the workers
        time.sleep(ITEM_S)
        return x * x

    reports: list[int] = []
    client: Any = ParallelClient(
        info["push"], info["pull"], info["db"], info["name"], secret="test-secret"
    )
    with client:
        results = client.map(slow_square, range(ITEMS), on_progress=reports.append)
    assert results == [x * x for x in range(ITEMS)]
    assert reports[-1] == ITEMS
    assert reports == sorted(set(reports))  # only ever forward
    # the first report after one item's work, not after a first wave of
    # ITEMS / 8 = 100 items (half a second here; minutes on a big map)
    assert reports[0] <= 2
    steps = [b - a for a, b in zip([0, *reports], reports, strict=False)]
    # chunks of about 50 ms of work (10 items) once the time per item is known:
    # a report every few tens of milliseconds per worker
    assert max(steps) <= 20, steps
    assert len(reports) >= ITEMS // 20
