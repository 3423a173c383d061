"""The scaling controller with local worker processes: from zero and back to zero,
scale-in under load losing nothing, and a steady trickle that does not flap."""

from __future__ import annotations

import re
import subprocess
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from palm.call.request import Client
from palm.standalone import ParallelClient
from tests.fixtures.procs import PALM, Processes, wait_for
from tests.fixtures.scaling import cold_start_s, naps, trickle

FAST = ("--heartbeat-interval-s", "0.2")
#: quick heartbeats, but a worker starved of CPU for a moment is not declared dead:
#: these tests count requeues, and only a worker leaving may cause none
PATIENT = (*FAST, "--liveness", "15")


def start_pool(procs: Processes, db: str, log: Path, *options: str) -> subprocess.Popen[str]:
    return procs.start(
        [
            *PALM,
            "--log-level",
            "INFO",
            "worker",
            "tests.apps.services:SlowWorker",
            "--connect",
            db,
            *options,
            *FAST,
        ],
        stdout=subprocess.DEVNULL,
        stderr=log.open("w"),
    )


def scale_events(log: Path) -> list[str]:
    return re.findall(r"scale process workers \d+ -> \d+", log.read_text())


@pytest.mark.timeout(150)
def test_from_zero_to_max_and_back_to_zero_scale_in_under_load_loses_nothing(
    procs: Processes, tmp_path: Path
) -> None:
    _, info = procs.master("master", *PATIENT)
    log = tmp_path / "pool.log"
    pool = start_pool(
        procs,
        info["db"],
        log,
        *("--processes", "0", "--max-processes", "4", "--jobs-per-worker", "2"),
        *("--scale-down-after-s", "1"),
    )
    probe = Client(info["db"], "master", timeout_s=5)

    def described() -> dict[str, Any]:
        answer: dict[str, Any] = probe.info()
        return answer

    client = ParallelClient(info["push"], info["pull"], info["db"], "master", batch=1, timeout_s=60)
    try:
        # no worker at all: the first job waits for a cold start, then is answered
        assert described()["workers"] == []
        began = time.monotonic()
        assert list(client.job("nap", [b"0.01"])) == [b"0.01"]
        waited = time.monotonic() - began
        cold = cold_start_s(log, timeout_s=10)
        assert 0 < cold <= waited + 1

        # a burst grows the pool to its maximum...
        burst = naps(400, "0.02")
        results: list[bytes] = []
        seen: list[int] = []
        t = threading.Thread(target=lambda: results.extend(client.job("nap", burst)))
        t.start()
        while t.is_alive():
            seen.append(len(described()["workers"]))
            t.join(0.1)
        assert sorted(results) == sorted(burst)
        assert max(seen) == 4

        # ...and a trickle after it sees the pool shrink while jobs flow
        slow = naps(80, "0.05", start=1000)
        answered, during = trickle(client, described, slow)
        assert sorted(answered) == sorted(slow)
        assert min(during) < max(during)  # workers left while jobs were running
        stats = described()["stats"]
        assert stats["requeued"] == 0, stats  # nobody left holding a job
        assert stats["duplicates"] == 0, stats

        # and with nothing left to do, back to zero
        wait_for(lambda: described()["workers"] == [], timeout_s=20)
    finally:
        client.close()
        probe.close()
    pool.terminate()
    assert pool.wait(15) == 0


@pytest.mark.timeout(150)
def test_a_steady_trickle_does_not_flap(procs: Processes, tmp_path: Path) -> None:
    """Half a minute of a steady trickle (batches of four 0.1 s jobs, one after
    the other; ten times the 3 s a pool waits before it shrinks): the pool grows
    to what it needs and stays there."""
    _, info = procs.master("master", *PATIENT)
    log = tmp_path / "pool.log"
    pool = start_pool(
        procs,
        info["db"],
        log,
        *("--processes", "0", "--max-processes", "6", "--jobs-per-worker", "2"),
        *("--scale-down-after-s", "3"),
    )
    client = ParallelClient(info["push"], info["pull"], info["db"], "master", batch=1, timeout_s=60)
    try:
        deadline = time.monotonic() + 30
        batch = 0
        while time.monotonic() < deadline and batch < 1000:
            jobs = naps(4, "0.1", start=batch * 4)
            assert sorted(client.job("nap", jobs)) == sorted(jobs)
            batch += 1
    finally:
        client.close()
    events = scale_events(log)
    assert 1 <= len(events) <= 3, events
    pool.terminate()
    assert pool.wait(15) == 0
