"""Which worker a message goes to: the one with the fewest messages in hand.

A worker may hold more credit than another (it asked for messages ahead while
its messages ran fast); slow single jobs arriving one by one must still spread
over the idle workers instead of queueing behind each other on the first one.
"""

from __future__ import annotations

from palm.serve.dispatch import Dispatcher
from tests.fixtures.dispatch import dispatcher as _pool
from tests.fixtures.dispatch import job as _job
from tests.fixtures.dispatch import worker


def _workers(pool: Dispatcher, *credits: int) -> None:
    for i, credit in enumerate(credits):
        worker(pool, b"w%d" % i, credit)


def test_messages_arriving_one_by_one_spread_over_workers_whatever_their_credit() -> None:
    sent: list[tuple[bytes, int]] = []
    pool = _pool(sent)
    _workers(pool, 8, 2)  # the first asked for six messages ahead
    for number in range(4):
        pool.enqueue(_job(number))
        pool.dispatch()
    assert sent == [(b"w0", 0), (b"w1", 1), (b"w0", 2), (b"w1", 3)]


def test_a_burst_goes_to_the_least_busy_worker_first() -> None:
    sent: list[tuple[bytes, int]] = []
    pool = _pool(sent)
    _workers(pool, 8, 8)
    pool.enqueue(_job(0))
    pool.enqueue(_job(1))
    pool.dispatch()
    pool.finished((b"c", 1), b"w1", 1, 1.0)  # w1 is done, w0 still runs job 0
    for number in range(2, 5):
        pool.enqueue(_job(number))
    pool.dispatch()
    assert [identity for identity, _ in sent[2:]] == [b"w1", b"w0", b"w1"]


def test_a_worker_without_credit_gets_nothing_however_idle() -> None:
    sent: list[tuple[bytes, int]] = []
    pool = _pool(sent)
    _workers(pool, 1, 3)
    for number in range(4):
        pool.enqueue(_job(number))
    pool.dispatch()
    assert sorted(identity for identity, _ in sent) == [b"w0", b"w1", b"w1", b"w1"]
