"""The parallel client's session with its master, in one process through palm.testing.

A master that is replaced on the same endpoints has a new session id and
knows nothing of the jobs the old one held: the client notices the new
session and sends its outstanding jobs again, and each is answered once.
The master is restarted over ``ipc://`` endpoints, which peers reconnect to
(ZeroMQ's inproc transport never reconnects). Each test lets the client hear
the first master's WELCOME before the restart: a client that never learnt a
session cannot tell a new master from the first one.
"""

from __future__ import annotations

import pytest

from palm.testing import LocalMaster, answers, wait_until
from tests.apps.kit import Echo, ok

pytestmark = pytest.mark.timeout(30)


def test_a_streaming_client_sends_its_outstanding_jobs_to_a_restarted_master() -> None:
    with LocalMaster(transport="ipc") as cluster:
        holder = cluster.stub_worker("echo", credit=10)
        client = cluster.client(batch=1)
        payloads = [b"%d" % i for i in range(6)]
        call = cluster.spawn(lambda: ok(client.job("echo", payloads)))
        holder.jobs(6)  # the first master handed every job out, none answered
        wait_until(lambda: client.session is not None, what="the client to know the session")
        old = cluster.info()["session"]
        cluster.restart()
        assert cluster.info()["session"] != old
        cluster.add_worker(Echo)
        assert call.result(timeout=5) == sorted(payloads)
        # the new master got each job once, from the client sending it again
        stats = cluster.stats()
        assert (stats["jobs_in"], stats["jobs_out"], stats["duplicates"]) == (6, 6, 0)


def test_eval_sends_its_job_again_to_a_restarted_master() -> None:
    with LocalMaster(transport="ipc") as cluster:
        holder = cluster.stub_worker("echo")
        client = cluster.client()
        call = cluster.spawn(client.eval, "echo", b"again")
        holder.next_job()
        wait_until(lambda: client.session is not None, what="the client to know the session")
        cluster.restart()
        cluster.add_worker(Echo)
        assert call.result(timeout=5) == b"again"
        assert cluster.stats()["jobs_in"] == 1


def test_late_answers_for_the_old_master_are_dropped_by_the_new_one() -> None:
    with LocalMaster(transport="ipc") as cluster:
        holder = cluster.stub_worker("echo", credit=3)
        client = cluster.client(batch=1)
        call = cluster.spawn(lambda: ok(client.job("echo", [b"a", b"b", b"c"])))
        held = holder.jobs(3)
        wait_until(lambda: client.session is not None, what="the client to know the session")
        cluster.restart()
        cluster.wait_for_stats(jobs_in=3)  # the client sent its jobs again
        # the old master's worker answers now: the new master never handed these out
        for job in held:
            holder.answer(job, [b"stale"])
        cluster.wait_for_stats(duplicates=3)
        cluster.add_worker(Echo)
        assert call.result(timeout=5) == [b"a", b"b", b"c"]


def test_a_worker_registers_again_with_a_restarted_master() -> None:
    with LocalMaster(transport="ipc") as cluster:
        worker = cluster.add_worker(Echo)
        cluster.restart()
        cluster.wait_for_workers(worker.name)
        wire = cluster.wire_client()
        (job_id,) = wire.send("echo", [b"after restart"])
        assert answers(wire.results(1)) == {job_id: b"after restart"}
