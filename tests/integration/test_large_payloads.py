"""Large payloads through a real master and real workers: every byte comes back.

Frames of 64 KiB or more cross the master without a copy (zmq frames sent and
received with ``copy=False``); these tests would see a payload altered,
truncated or swapped for another on that path.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import pytest

from palm.standalone import ParallelClient
from tests.fixtures.procs import Processes, wait_for

WORKER = "tests.apps.services:EchoWorker"
FAST = ("--heartbeat-interval-s", "0.2")
MIB = 1 << 20


def distinct(index: int, size: int) -> bytes:
    """``size`` bytes no other index gives: a digest chain, not a repeated byte."""
    seed = hashlib.sha256(b"%d" % index).digest()
    return (seed * (size // len(seed) + 1))[: size - 8] + index.to_bytes(8, "big")


def start_cluster(procs: Processes, workers: int) -> dict[str, Any]:
    from palm.call.request import Client

    _, info = procs.master("master", *FAST)
    for i in range(workers):
        procs.worker(WORKER, f"w{i}", info, *FAST)

    def joined() -> bool:
        with Client(info["db"], info["name"], timeout_s=5) as probe:
            return len(probe.info()["workers"]) >= workers

    wait_for(joined)
    return info


def client_of(info: dict[str, Any], **options: Any) -> ParallelClient:
    return ParallelClient(info["push"], info["pull"], info["db"], info["name"], **options)


@pytest.mark.timeout(180)
def test_3_mib_payloads_of_distinct_contents_come_back_intact(procs: Processes) -> None:
    info = start_cluster(procs, 2)
    payloads = [distinct(i, 3 * MIB + i) for i in range(24)]
    with client_of(info) as client:
        echoed = list(client.job("echo", payloads, ordered=True))
        tagged = list(client.job("tag", iter(payloads)))  # a result the worker built from it
        single = client.eval("echo", payloads[5])  # the one-job path
    assert [len(r) for r in echoed] == [len(p) for p in payloads]
    assert echoed == payloads
    assert all(type(r) is bytes for r in echoed)
    assert sorted(tagged) == sorted(b"ok:" + p for p in payloads)
    assert single == payloads[5]


@pytest.mark.timeout(180)
def test_sizes_on_both_sides_of_the_copy_thresholds_mix_in_one_stream(procs: Processes) -> None:
    info = start_cluster(procs, 2)
    sizes = [1, 100, 16 * 1024, 16 * 1024 + 1, 64 * 1024 - 1, 64 * 1024, 64 * 1024 + 1, MIB + 3]
    payloads = [distinct(i, size) for i, size in enumerate(sizes * 4)]
    with client_of(info, window=7) as client:
        echoed = list(client.job("echo", payloads, ordered=True))
    assert echoed == payloads


@pytest.mark.timeout(180)
def test_small_jobs_with_large_results_get_them_whole(procs: Processes) -> None:
    info = start_cluster(procs, 2)
    jobs = [b"%d" % i for i in range(40)]  # small: they travel packed, many per message
    with client_of(info) as client:
        results = list(client.job("expand", jobs, ordered=True))
    assert results == [hashlib.sha256(j).digest() * 32768 + j for j in jobs]


VIEW_WORKER = "tests.apps.services:ViewWorker"


def start_view_cluster(procs: Processes, workers: int) -> dict[str, Any]:
    _, info = procs.master("master", *FAST)
    for i in range(workers):
        procs.worker(VIEW_WORKER, f"v{i}", info, *FAST)
    from palm.call.request import Client

    def joined() -> bool:
        with Client(info["db"], info["name"], timeout_s=5) as probe:
            return len(probe.info()["workers"]) >= workers

    wait_for(joined)
    return info


@pytest.mark.timeout(180)
def test_zero_copy_functions_get_read_only_views_and_answer_with_them(procs: Processes) -> None:
    info = start_view_cluster(procs, 2)
    sizes = [MIB + 5, 3 * MIB, 64 * 1024, 64 * 1024 - 1, 100, 9]
    payloads = [distinct(i, size) for i, size in enumerate(sizes * 3)]
    with client_of(info) as client:
        echoed = list(client.job("view_echo", payloads, ordered=True))
        tails = list(client.job("view_tail", payloads, ordered=True))
        kinds = list(client.job("view_kind", payloads, ordered=True))
        passed = list(client.job("echo", payloads, ordered=True))  # bytes in, the same out
    assert echoed == payloads
    assert all(type(r) is bytes for r in echoed)
    assert tails == [p[8:] for p in payloads]
    assert kinds == [b"memoryview:1:%d" % len(p) for p in payloads]
    assert passed == payloads


@pytest.mark.timeout(180)
def test_a_large_job_whose_worker_is_killed_comes_back_whole_from_another(
    procs: Processes, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from tests.apps.services import KILL_MARK_ENV

    mark = tmp_path / "killed"
    monkeypatch.setenv(KILL_MARK_ENV, str(mark))
    info = start_view_cluster(procs, 2)
    payloads = [distinct(i, 2 * MIB + i) for i in range(12)]
    payloads[5] = b"kill" + payloads[5][4:]
    with client_of(info, timeout_s=60) as client:
        echoed = list(client.job("view_or_die", payloads, ordered=True))
    assert mark.exists()  # a worker did die holding the job
    assert echoed == payloads
