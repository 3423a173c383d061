"""SharedClient: many threads, one set of sockets, real master and worker processes."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

import pytest

from palm import RemoteError, TimeoutError
from palm.call.shared import SharedClient
from tests.fixtures.procs import Processes, wait_for
from tests.integration.test_parallel import (
    FAST,
    WORKER,
    master_info,
    start_cluster,
)


def shared_of(info: dict[str, Any], **options: Any) -> SharedClient:
    return SharedClient(info["push"], info["pull"], info["db"], info["name"], **options)


def in_threads(threads: int, work: Callable[[int], None]) -> list[BaseException]:
    """Run ``work(i)`` in ``threads`` threads; the exceptions they raised."""
    failures: list[BaseException] = []

    def run(i: int) -> None:
        try:
            work(i)
        except BaseException as exc:  # collected for the test to assert on
            failures.append(exc)

    pool = [threading.Thread(target=run, args=(i,)) for i in range(threads)]
    for thread in pool:
        thread.start()
    for thread in pool:
        thread.join(120)
    assert not any(thread.is_alive() for thread in pool)
    return failures


@pytest.mark.timeout(120)
def test_each_thread_gets_its_own_results_and_calls_travel_together(procs: Processes) -> None:
    info = start_cluster(procs, 2)
    wrong: list[tuple[bytes, bytes]] = []
    with shared_of(info) as client:

        def work(t: int) -> None:
            for i in range(300):
                payload = b"%d:%d" % (t, i)
                result = client.eval("tag", payload)
                if result != b"ok:" + payload:
                    wrong.append((payload, result))

        assert in_threads(16, work) == []
        assert wrong == []
        assert client.jobs_sent == 16 * 300
        # concurrent calls shared messages
        assert client.messages_sent < client.jobs_sent / 2


@pytest.mark.timeout(60)
def test_each_job_of_a_combined_message_keeps_its_request_id(procs: Processes) -> None:
    info = start_cluster(procs, 1)
    wrong: list[tuple[str, bytes]] = []
    with shared_of(info) as client:

        def work(t: int) -> None:
            for i in range(100):
                request_id = f"req-{t}-{i}"
                result = client.eval("request_id", b"x", request_id=request_id)
                if result != request_id.encode() + b"|x":
                    wrong.append((request_id, result))

        assert in_threads(8, work) == []
        assert wrong == []
        assert client.messages_sent < client.jobs_sent


@pytest.mark.timeout(60)
def test_an_error_reaches_only_its_own_caller(procs: Processes) -> None:
    info = start_cluster(procs, 1)
    with shared_of(info) as client:
        errors: list[str] = []

        def work(t: int) -> None:
            for i in range(100):
                if t == 0 and i % 10 == 0:
                    with pytest.raises(RemoteError) as err:
                        client.eval("boom", b"%d" % i)
                    errors.append(str(err.value))
                else:
                    assert client.eval("echo", b"%d-%d" % (t, i)) == b"%d-%d" % (t, i)

        assert in_threads(6, work) == []
        assert len(errors) == 10
        assert all("worker boom" in e for e in errors)


@pytest.mark.timeout(60)
def test_calls_time_out_without_workers_and_late_answers_are_dropped(procs: Processes) -> None:
    info = start_cluster(procs, 0)
    with shared_of(info, heartbeat_interval_s=0.2) as client:
        timeouts: list[BaseException] = []

        def stuck(t: int) -> None:
            with pytest.raises(TimeoutError) as err:
                client.eval("echo", b"late %d" % t, timeout_s=1.0)
            timeouts.append(err.value)

        assert in_threads(4, stuck) == []
        assert len(timeouts) == 4
        procs.worker(WORKER, "w", info, *FAST)

        def work(t: int) -> None:
            assert client.eval("echo", b"now %d" % t, timeout_s=30) == b"now %d" % t

        assert in_threads(4, work) == []


@pytest.mark.timeout(120)
def test_jobs_held_by_a_killed_master_are_sent_again_to_the_new_one(procs: Processes) -> None:
    master, info = procs.master("master", *FAST)
    with shared_of(info, heartbeat_interval_s=0.2) as client:
        results: dict[int, bytes] = {}

        def work(t: int) -> None:
            results[t] = client.eval("echo", b"held %d" % t, timeout_s=60)

        threads = [threading.Thread(target=work, args=(t,)) for t in range(5)]
        for thread in threads:
            thread.start()
        # no workers yet: the master holds all five jobs when it dies
        wait_for(lambda: master_info(info)["stats"]["jobs_in"] == 5)
        master.kill()
        master.wait()
        procs.master_again(info, *FAST)
        procs.worker(WORKER, "w", info, *FAST)
        for thread in threads:
            thread.join(60)
        assert results == {t: b"held %d" % t for t in range(5)}


@pytest.mark.timeout(60)
def test_closing_while_calls_wait_fails_them_and_closes_the_sockets(procs: Processes) -> None:
    info = start_cluster(procs, 0)  # no workers: every call waits
    client = shared_of(info, heartbeat_interval_s=0.2)
    errors: list[BaseException] = []
    entered = threading.Barrier(5)

    def stuck(t: int) -> None:
        entered.wait()
        with pytest.raises(RuntimeError, match="closed") as err:
            client.eval("echo", b"never %d" % t, timeout_s=30)
        errors.append(err.value)

    threads = [threading.Thread(target=stuck, args=(t,)) for t in range(4)]
    for thread in threads:
        thread.start()
    entered.wait()
    wait_for(lambda: client.jobs_sent == 4)
    client.close()
    for thread in threads:
        thread.join(10)
    assert not any(thread.is_alive() for thread in threads)
    assert len(errors) == 4
    # the receiving caller closed the sockets on its way out
    wait_for(lambda: client.client._sockets is None, timeout_s=5)
    with pytest.raises(RuntimeError, match="closed"):
        client.eval("echo", b"after")
