"""The parallel master's engine, in one process through palm.testing.

Dispatch by credit and by function, requeue when a worker dies, ``JobLost``
after ``max_attempts`` deaths, and exactly-once delivery when results come
twice or late. Stub workers stand for workers the test drives by hand; a
WireClient shows every result message the master sends, so what is checked
is the master's own behaviour (the ParallelClient drops duplicates itself).
"""

from __future__ import annotations

import time

import pytest

from palm import JobLost, RemoteError, UnknownFunction
from palm.serve.worker import EXTRA_CREDIT
from palm.standalone import Worker
from palm.testing import LocalMaster, answers, wait_until
from tests.apps.kit import Echo, ok

pytestmark = pytest.mark.timeout(30)


class Upper(Worker):
    def upper(self, message: bytes) -> bytes:
        return message.upper()


# dispatch ----------------------------------------------------------------------


def test_jobs_go_only_to_workers_with_credit_and_credit_returns_with_results() -> None:
    with LocalMaster() as cluster:
        rich = cluster.stub_worker("echo", credit=2)
        broke = cluster.stub_worker("echo", credit=0)
        wire = cluster.wire_client()
        sent = {wire.send("echo", [b"%d" % i])[0]: b"%d" % i for i in range(3)}
        first, second = rich.jobs(2)
        cluster.wait_for_stats(jobs_in=3)
        # three jobs in, credit for two: the third waits, the worker without credit gets none
        info = cluster.info()
        assert (info["queued"], info["inflight"]) == (1, 2)
        assert {name: w["credit"] for name, w in cluster.workers().items()} == {
            rich.name: 0,
            broke.name: 0,
        }
        assert broke.pending() == []
        # a result gives one credit back, and with it the waiting job
        rich.answer(first)
        third = rich.next_job()
        assert [first.header.id, second.header.id, third.header.id] == sorted(sent)
        rich.answer(second)
        rich.answer(third)
        assert answers(wire.results(3)) == sent
        assert cluster.workers()[rich.name]["credit"] == 2
        assert cluster.info()["queued"] == 0
        assert broke.pending() == []


def test_a_credit_message_asks_for_jobs_without_a_result() -> None:
    with LocalMaster() as cluster:
        stub = cluster.stub_worker("echo", credit=0)
        wire = cluster.wire_client()
        ids = [wire.send("echo", [b"job"])[0] for _ in range(3)]
        cluster.wait_for_stats(jobs_in=3)
        assert cluster.info()["queued"] == 3
        stub.add_credit(2)
        held = stub.jobs(2)
        assert cluster.info()["queued"] == 1
        for job in held:
            stub.answer(job)
        stub.answer(stub.next_job())
        assert sorted(answers(wire.results(3))) == ids


class Paced(Worker):
    def echo(self, message: bytes) -> bytes:
        return message

    def nap(self, message: bytes) -> bytes:
        time.sleep(0.004)
        return message


def test_a_worker_asks_for_more_credit_after_fast_batches_and_gives_it_back_after_slow_ones() -> (
    None
):
    with LocalMaster() as cluster:
        worker = cluster.add_worker(Paced, credit=2)
        wire = cluster.wire_client()

        def credit() -> int:
            return int(cluster.workers()[worker.name]["credit"])

        # messages of one job keep the worker's credit as it is
        for _ in range(3):
            wire.send("echo", [b"one"])
        wire.results(3)
        assert worker.extra_credit == 0
        # fast batches: one more message ahead after each, up to EXTRA_CREDIT more
        for _ in range(EXTRA_CREDIT + 2):
            wire.send("echo", [b"a", b"b"], packed=True)
        wire.results(2 * (EXTRA_CREDIT + 2))  # (two jobs a message)
        wait_until(lambda: credit() == 2 + EXTRA_CREDIT, timeout_s=5)
        assert worker.extra_credit == EXTRA_CREDIT
        # slow batches: each result keeps one such credit back, down to ``credit``
        for _ in range(EXTRA_CREDIT + 2):
            wire.send("nap", [b"a", b"b"], packed=True)
        wire.results(2 * (EXTRA_CREDIT + 2))
        wait_until(lambda: credit() == 2, timeout_s=5)
        assert worker.extra_credit == 0
        info = cluster.info()
        assert (info["queued"], info["inflight"]) == (0, 0)


def test_jobs_for_a_function_go_only_to_workers_that_declare_it() -> None:
    with LocalMaster() as cluster:
        alpha = cluster.stub_worker("alpha", credit=10)
        beta = cluster.stub_worker("beta", credit=10)
        wire = cluster.wire_client()
        for i in range(4):
            wire.send("alpha", [b"a%d" % i])
            wire.send("beta", [b"b%d" % i])
        alpha_jobs, beta_jobs = alpha.jobs(4), beta.jobs(4)
        assert {job.function for job in alpha_jobs} == {"alpha"}
        assert {job.function for job in beta_jobs} == {"beta"}
        for job in alpha_jobs:
            alpha.answer(job)
        for job in beta_jobs:
            beta.answer(job)
        assert len(answers(wire.results(8))) == 8
        assert alpha.pending() == beta.pending() == []


def test_real_workers_run_only_the_functions_they_define() -> None:
    with LocalMaster() as cluster:
        cluster.add_worker(Echo)
        cluster.add_worker(Upper)
        client = cluster.client(batch=1)
        # a job sent to the wrong worker would come back as its UnknownFunction
        assert ok(client.job("upper", [b"a", b"b", b"c", b"d"])) == [b"A", b"B", b"C", b"D"]
        assert ok(client.job("echo", [b"a", b"b", b"c", b"d"])) == [b"a", b"b", b"c", b"d"]


def test_an_unknown_function_is_answered_with_UnknownFunction_naming_the_known_ones() -> None:
    with LocalMaster() as cluster:
        cluster.add_worker(Echo)
        cluster.add_worker(Upper)
        client = cluster.client()
        with pytest.raises(UnknownFunction) as caught:
            client.eval("nope", b"x")
        assert "'nope'" in caught.value.remote_message
        assert "echo, upper" in caught.value.remote_message
        batch = list(client.job("nope", [b"1", b"2"], errors="yield"))
        assert len(batch) == 2 and all(isinstance(r, UnknownFunction) for r in batch)
        assert cluster.stats()["failed"] == 3
        assert client.eval("echo", b"still serving") == b"still serving"


# workers that die ----------------------------------------------------------------


def test_the_jobs_of_a_worker_that_falls_silent_go_to_another_and_are_answered_once() -> None:
    with LocalMaster() as cluster:
        doomed = cluster.stub_worker("echo", credit=3)
        wire = cluster.wire_client()
        sent = {wire.send("echo", [b"%d" % i])[0]: b"%d" % i for i in range(3)}
        held = doomed.jobs(3)
        doomed.die()
        cluster.wait_for_worker_gone(doomed.name)
        assert cluster.stats()["requeued"] == 3
        rescuer = cluster.stub_worker("echo", credit=3)
        # the job it was running counts the death: it runs alone, then the others go
        suspect = rescuer.next_job()
        assert suspect.header.id == held[0].header.id
        rescuer.answer(suspect)
        again = rescuer.jobs(2)
        assert [job.header.id for job in again] == [job.header.id for job in held[1:]]
        for job in again:
            rescuer.answer(job)
        assert answers(wire.results(3)) == sent
        assert wire.sync() == []


def test_a_client_streaming_through_a_worker_death_gets_every_result_once() -> None:
    with LocalMaster() as cluster:
        doomed = cluster.stub_worker("echo", credit=4)
        client = cluster.client(batch=1, window=8)
        payloads = [b"%02d" % i for i in range(20)]
        call = cluster.spawn(lambda: ok(client.job("echo", payloads)))
        doomed.jobs(4)
        doomed.die()
        cluster.wait_for_worker_gone(doomed.name)
        cluster.add_worker(Echo)
        assert call.result(timeout=5) == payloads
        assert cluster.stats()["jobs_out"] == 20


def test_a_worker_that_leaves_hands_its_jobs_back_without_charging_them() -> None:
    with LocalMaster(max_attempts=1) as cluster:
        stub = cluster.stub_worker("echo")
        wire = cluster.wire_client()
        (job_id,) = wire.send("echo", [b"x"])
        stub.next_job()
        stub.leave()
        cluster.wait_for_worker_gone(stub.name)
        cluster.add_worker(Echo)
        assert answers(wire.results(1)) == {job_id: b"x"}


def test_a_batch_that_took_down_its_worker_is_retried_one_job_at_a_time() -> None:
    with LocalMaster() as cluster:
        doomed = cluster.stub_worker("echo")
        wire = cluster.wire_client()
        ids = wire.send("echo", [b"a", b"b", b"c"], packed=True)
        assert doomed.next_job().payloads == [b"a", b"b", b"c"]
        doomed.die()
        cluster.wait_for_worker_gone(doomed.name)
        rescuer = cluster.stub_worker("echo", credit=3)
        parts = []
        for _ in range(3):  # each part is a suspect: alone, the next once it is answered
            part = rescuer.next_job()
            parts.append((part.header.id, part.payloads))
            rescuer.answer(part)
        assert parts == [(ids[0], [b"a"]), (ids[1], [b"b"]), (ids[2], [b"c"])]
        assert answers(wire.results(3)) == dict(zip(ids, [b"a", b"b", b"c"], strict=True))


def test_a_job_whose_worker_dies_with_it_max_attempts_times_comes_back_as_JobLost() -> None:
    with LocalMaster(max_attempts=2) as cluster:
        client = cluster.client()
        call = cluster.spawn(client.eval, "echo", b"poison")
        for _ in range(2):
            stub = cluster.stub_worker("echo")
            assert stub.next_job().payloads == [b"poison"]
            stub.die()
            cluster.wait_for_worker_gone(stub.name)
        with pytest.raises(JobLost) as caught:
            call.result(timeout=2)
        assert "died 2 times" in caught.value.remote_message
        assert cluster.stats()["failed"] == 1


def test_only_the_job_a_worker_was_running_is_charged_with_its_death() -> None:
    with LocalMaster(max_attempts=2) as cluster:
        wire = cluster.wire_client()
        (poison,) = wire.send("echo", [b"poison"])
        (bystander,) = wire.send("echo", [b"bystander"])
        stub = cluster.stub_worker("echo", credit=2)
        assert [job.payloads for job in stub.jobs(2)] == [[b"poison"], [b"bystander"]]
        stub.die()
        cluster.wait_for_worker_gone(stub.name)
        # the poison job counted the death: it runs alone now, the bystander waits
        stub = cluster.stub_worker("echo", credit=2)
        assert stub.next_job().payloads == [b"poison"]
        time.sleep(0.2)  # room for a wrong second message to arrive
        assert stub.pending() == []
        stub.die()
        cluster.wait_for_worker_gone(stub.name)
        cluster.add_worker(Echo)
        outcomes = answers(wire.results(2))
        assert isinstance(outcomes[poison], JobLost)
        assert outcomes[bystander] == b"bystander"
        assert wire.sync() == []


# results that come twice or late -------------------------------------------------


def test_a_result_sent_twice_reaches_the_client_once_and_is_counted() -> None:
    with LocalMaster() as cluster:
        stub = cluster.stub_worker("echo")
        wire = cluster.wire_client()
        (job_id,) = wire.send("echo", [b"once"])
        job = stub.next_job()
        stub.answer(job)
        stub.answer(job)
        assert answers(wire.results(1)) == {job_id: b"once"}
        stats = cluster.wait_for_stats(duplicates=1)
        assert (stats["jobs_out"], stats["duplicates"]) == (1, 1)
        assert wire.sync() == []


def test_a_worker_answering_twice_earns_no_extra_credit() -> None:
    with LocalMaster() as cluster:
        stub = cluster.stub_worker("echo", credit=1)
        wire = cluster.wire_client()
        wire.send("echo", [b"once"])
        job = stub.next_job()
        stub.answer(job)
        stub.answer(job)
        cluster.wait_for_stats(duplicates=1)
        assert cluster.workers()[stub.name]["credit"] == 1


def test_the_parallel_client_sees_one_result_for_an_answer_sent_twice() -> None:
    with LocalMaster() as cluster:
        stub = cluster.stub_worker("echo")
        client = cluster.client()
        call = cluster.spawn(lambda: list(client.job("echo", [b"x", b"y"])))
        job = stub.next_job()
        stub.answer(job)
        stub.answer(job)
        assert ok(call.result(timeout=2)) == [b"x", b"y"]
        assert cluster.wait_for_stats(duplicates=1)["jobs_out"] == 2


@pytest.mark.parametrize("late", ["before the new worker answers", "after the new worker answers"])
def test_a_late_result_from_a_worker_declared_dead_is_delivered_at_most_once(late: str) -> None:
    with LocalMaster() as cluster:
        slow = cluster.stub_worker("echo")
        wire = cluster.wire_client()
        (job_id,) = wire.send("echo", [b"x"])
        first = slow.next_job()
        slow.die()
        cluster.wait_for_worker_gone(slow.name)
        rescuer = cluster.stub_worker("echo")
        second = rescuer.next_job()
        if late.startswith("before"):
            slow.answer(first, [b"late"])
            assert answers(wire.results(1)) == {job_id: b"late"}
            rescuer.answer(second, [b"new"])
        else:
            rescuer.answer(second, [b"new"])
            assert answers(wire.results(1)) == {job_id: b"new"}
            slow.answer(first, [b"late"])
        cluster.wait_for_stats(duplicates=1)
        assert wire.sync() == []
        assert cluster.stats()["jobs_out"] == 1
        # the rescuer's answer gave its credit back either way
        assert cluster.workers()[rescuer.name]["credit"] == 1


def test_a_streaming_call_yields_a_message_s_results_before_its_failed_one_then_raises() -> None:
    with LocalMaster() as cluster:
        stub = cluster.stub_worker("echo")
        client = cluster.client(batch=4)
        results = client.job("echo", [b"a", b"b", b"c", b"d"], ordered=True)
        assert stub.pending() == []  # nothing is sent before a result is asked for
        call = cluster.spawn(next, results)
        stub.answer(stub.next_job(), [b"a", b"b", b"", b"d"], errors={2: ("ValueError", "no c")})
        assert call.result(timeout=5) == b"a"
        assert next(results) == b"b"
        with pytest.raises(RemoteError, match="no c"):
            next(results)


def test_an_error_result_travels_back_as_a_remote_error() -> None:
    with LocalMaster() as cluster:
        stub = cluster.stub_worker("echo")
        wire = cluster.wire_client()
        ids = wire.send("echo", [b"ok", b"bad"])
        stub.answer(stub.next_job(), errors={1: ("ValueError", "bad input")})
        outcomes = answers(wire.results(2))
        assert outcomes[ids[0]] == b"ok"
        error = outcomes[ids[1]]
        assert isinstance(error, RemoteError)
        assert error.remote_type == "ValueError"
        assert error.remote_message.startswith("bad input")
        assert cluster.stats()["failed"] == 1
