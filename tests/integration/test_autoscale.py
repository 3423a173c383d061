"""A worker pool following its master's backlog, with real processes."""

from __future__ import annotations

import signal
import subprocess
import threading
from typing import Any

import pytest

from palm.call.request import Client
from palm.standalone import ParallelClient
from tests.fixtures.procs import PALM, Processes, wait_for

FAST = ("--heartbeat-interval-s", "0.2")


@pytest.mark.timeout(120)
def test_the_pool_grows_with_the_backlog_and_shrinks_after(procs: Processes) -> None:
    _, info = procs.master("master", *FAST)
    pool = procs.start(
        [
            *PALM,
            "--log-level",
            "WARNING",
            "worker",
            "tests.apps.services:SlowWorker",
            "--connect",
            info["db"],
            "--processes",
            "1",
            "--max-processes",
            "3",
            "--jobs-per-worker",
            "2",
            "--scale-down-after-s",
            "1",
            *FAST,
        ],
        stdout=subprocess.DEVNULL,
    )
    probe = Client(info["db"], "master", timeout_s=5)

    def workers() -> int:
        described: dict[str, Any] = probe.info()
        return len(described["workers"])

    wait_for(lambda: workers() == 1)
    seen: list[int] = []
    client = ParallelClient(info["push"], info["pull"], info["db"], "master", batch=1)
    results: list[bytes] = []
    t = threading.Thread(target=lambda: results.extend(client.job("nap", [b"0.05"] * 120)))  # type: ignore[arg-type]
    t.start()
    while t.is_alive():
        seen.append(workers())
        t.join(0.1)
    assert len(results) == 120
    assert max(seen) == 3
    wait_for(lambda: workers() == 1, timeout_s=20)
    client.close()
    probe.close()
    pool.send_signal(signal.SIGTERM)
    assert pool.wait(15) == 0
