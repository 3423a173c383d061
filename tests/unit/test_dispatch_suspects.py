"""A job that counts a death runs alone, so only its own deaths are counted.

When a worker dies, the oldest job it held is charged; but that job may have
finished, its result dying with the worker before it left. Such a job is a
suspect: it goes only to a worker holding nothing else, and that worker gets
nothing else until it answers, so an innocent job is never charged twice and
a poison job's deaths are all its own.
"""

from __future__ import annotations

from palm.serve.dispatch import Dispatcher, WorkerInfo
from tests.fixtures.dispatch import dispatcher as _pool
from tests.fixtures.dispatch import job as _job
from tests.fixtures.dispatch import worker as _worker


def _busy(
    jobs: int, *credits: int
) -> tuple[Dispatcher, list[tuple[bytes, int]], list[tuple[int, str]], list[WorkerInfo]]:
    """Workers w0, w1... with ``credits``, and jobs 0 to ``jobs - 1`` handed out:
    the pool, what it sent, what it failed, the workers."""
    sent: list[tuple[bytes, int]] = []
    failed: list[tuple[int, str]] = []
    pool = _pool(sent, failed)
    workers = [_worker(pool, b"w%d" % i, credit) for i, credit in enumerate(credits)]
    for number in range(jobs):
        pool.enqueue(_job(number))
    pool.dispatch()
    return pool, sent, failed, workers


def _done(pool: Dispatcher, number: int, worker: bytes) -> None:
    assert pool.finished((b"c", number), worker, 1, 1.0) is not None
    pool.dispatch()


def test_a_suspect_waits_for_a_worker_holding_nothing_which_then_runs_it_alone() -> None:
    pool, sent, failed, (w0, w1) = _busy(4, 4, 4)
    assert sorted(sent) == [(b"w0", 0), (b"w0", 2), (b"w1", 1), (b"w1", 3)]
    sent.clear()
    pool.gone(w0, "killed")  # job 0 counts the death; job 2 goes back as it was
    pool.enqueue(_job(4))
    pool.dispatch()
    assert sent == []  # w1 holds jobs 1 and 3: it takes nothing new until it is empty
    assert w1.kept_free
    _done(pool, 1, b"w1")
    assert sent == []
    _done(pool, 3, b"w1")
    assert sent == [(b"w1", 0)]  # alone
    assert not w1.kept_free and w1.suspect == (b"c", 0)
    _done(pool, 0, b"w1")  # it came back: w1 takes anything again
    assert sent == [(b"w1", 0), (b"w1", 2), (b"w1", 4)]
    assert w1.suspect is None and failed == []


def test_a_worker_that_joins_free_takes_the_suspect_and_the_kept_one_is_released() -> None:
    pool, sent, failed, (w0, w1) = _busy(3, 1, 3)
    pool.gone(w0, "killed")  # its job 0 counts a death
    pool.dispatch()
    assert w1.kept_free
    sent.clear()
    _worker(pool, b"w2", 2)
    pool.dispatch()
    assert sent == [(b"w2", 0)]
    assert not w1.kept_free  # w1 takes other jobs again
    pool.enqueue(_job(5))
    pool.dispatch()
    assert sent == [(b"w2", 0), (b"w1", 5)]
    assert failed == []


def test_an_innocent_job_whose_result_died_with_its_worker_is_not_lost() -> None:
    """Each worker gets [good, poison]; it answers the good job, but dies on the
    poison one before that answer leaves. Only the poison job may fail."""
    sent: list[tuple[bytes, int]] = []
    failed: list[tuple[int, str]] = []
    pool = _pool(sent, failed)
    good, poison = 0, 1
    pool.enqueue(_job(good))
    pool.enqueue(_job(poison))
    finished: list[int] = []
    for n in range(12):
        if not pool.workers:
            _worker(pool, b"w%d" % n, 2)
        pool.dispatch()
        for w in list(pool.workers.values()):
            held = [key[1] for key in w.inflight]
            for i, number in enumerate(held):
                if number == poison:
                    pool.gone(w, "killed")
                    break
                if held[i + 1 : i + 2] == [poison]:
                    continue  # answered, but the answer dies with the worker
                assert pool.finished((b"c", number), w.identity, 1, 1.0) is not None
                finished.append(number)
        if not pool.queued and not pool.inflight:
            break
    assert finished == [good]
    assert failed == [(poison, "palm.JobLost")]
