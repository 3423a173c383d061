"""Which worker a message goes to: the one with the fewest messages in hand.

A worker may hold more credit than another (it asked for messages ahead while
its messages ran fast); slow single jobs arriving one by one must still spread
over the idle workers instead of queueing behind each other on the first one.
"""

from __future__ import annotations

import logging

from palm.serve.dispatch import Dispatcher, Job, WorkerInfo
from palm.state.counters import Counters
from palm.wire.protocol import Header, Kind


def _pool(sent: list[tuple[bytes, int]]) -> Dispatcher:
    def send(identity: bytes, frames: list[bytes]) -> bool:
        sent.append((identity, int(frames[1])))
        return True

    return Dispatcher(
        "m",
        max_attempts=3,
        send=send,
        fail=lambda job, type_, message: None,
        counters=Counters("m"),
        stats={"requeued": 0, "duplicates": 0},
        logger=logging.getLogger("palm.test.dispatch"),
    )


def _job(number: int) -> Job:
    header = Header(Kind.JOB, id=number, client=b"c", function="nap")
    return Job(b"c", header, [b"header", str(number).encode()], function="nap")


def _workers(pool: Dispatcher, *credits: int) -> None:
    for i, credit in enumerate(credits):
        pool.join(WorkerInfo(b"w%d" % i, credit, 0.0, functions=frozenset({"nap"})))


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
