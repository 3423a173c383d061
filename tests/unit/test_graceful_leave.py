"""A worker asked to leave finishes what it holds: nothing lost, nothing run twice."""

from __future__ import annotations

import threading
import time
from collections import Counter

import pytest

from palm.standalone import Worker
from palm.testing import LocalMaster, answers, wait_until

pytestmark = pytest.mark.timeout(60)


class Counted(Worker):
    """Naps a little and counts every payload it runs, across instances."""

    runs: Counter[bytes] = Counter()
    lock = threading.Lock()

    def nap(self, message: bytes) -> bytes:
        time.sleep(0.01)
        with Counted.lock:
            Counted.runs[message] += 1
        return message


def test_a_leaving_worker_finishes_its_jobs_and_none_runs_twice() -> None:
    Counted.runs.clear()
    jobs = [b"%d" % i for i in range(300)]
    with LocalMaster() as cluster:
        stays = cluster.add_worker(Counted, credit=4)
        leaves = cluster.add_worker(Counted, credit=4)
        client = cluster.client(batch=1)
        results: list[bytes] = []
        burst = threading.Thread(target=lambda: results.extend(client.job("nap", jobs)))
        burst.start()
        wait_until(lambda: leaves.jobs_done >= 20, timeout_s=30)
        cluster.stop_worker(leaves)  # it asks to leave while holding jobs
        assert leaves.name not in cluster.workers()
        burst.join(30)
        assert not burst.is_alive()
        assert sorted(results) == sorted(jobs)
        assert all(Counted.runs[j] == 1 for j in jobs), Counted.runs.most_common(3)
        stats = cluster.stats()
        assert stats["requeued"] == 0
        assert stats["duplicates"] == 0
        assert stays.jobs_done + leaves.jobs_done == len(jobs)


def test_a_leaving_worker_gets_no_more_jobs_nor_credit_and_goes_after_its_goodbye() -> None:
    with LocalMaster() as cluster:
        stub = cluster.stub_worker("echo", credit=2)
        wire = cluster.wire_client()
        first = wire.send("echo", [b"a"])[0]
        job = stub.next_job()
        stub.ask_to_leave()  # returns once the master's BYE came back
        assert cluster.workers()[stub.name]["leaving"] is True
        wire.send("echo", [b"b"])
        cluster.wait_for_stats(jobs_in=2)
        stub.add_credit(5)
        stub.answer(job)
        assert answers(wire.results(1)) == {first: b"a"}
        assert cluster.workers()[stub.name]["credit"] == 0
        assert cluster.info()["queued"] == 1  # "b" waits for another worker
        assert stub.pending() == []
        stub.say_goodbye()
        cluster.wait_for_worker_gone(stub.name)
        assert cluster.stats()["requeued"] == 0


def test_a_stopping_master_says_goodbye_and_a_real_worker_comes_back_to_the_next() -> None:
    with LocalMaster(transport="ipc") as cluster:
        stub = cluster.stub_worker("echo")
        worker = cluster.add_worker(Counted)
        cluster.restart()
        # the old master said BYE before it went (the stub reads it with its pending jobs)
        wait_until(lambda: stub.pending() == [] and stub.goodbyes == 1, timeout_s=10)
        cluster.wait_for_workers(worker.name)  # registered again with the new master
        client = cluster.client(batch=1)
        assert list(client.job("nap", [b"x"])) == [b"x"]
