"""Worker liveness is judged only on what the master had the chance to read.

A master whose loop stalls (here: a ``scatter`` hook that takes far longer
than the liveness deadline) must not declare dead the workers whose
heartbeats wait, unread, in its sockets meanwhile.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterator

import pytest

from palm.serve.dispatch import Dispatcher, WorkerInfo
from palm.serve.master import Master
from palm.serve.stream import Message
from palm.state.counters import Counters
from palm.testing import LocalMaster, answers

pytestmark = pytest.mark.timeout(60)

STALL_S = 1.0  # against a liveness deadline of 3 x 0.05 s


class Stalling(Master):
    """A master whose loop stalls on a job whose payload is ``stall``."""

    stalled = threading.Event()

    def scatter(self, message: Message) -> Iterator[Message]:
        if message.payload == b"stall":
            time.sleep(STALL_S)
            self.stalled.set()
        yield message


def test_a_stalled_loop_declares_no_worker_dead() -> None:
    Stalling.stalled.clear()
    with LocalMaster(master_class=Stalling) as cluster:
        busy = cluster.stub_worker("echo", credit=1)
        wire = cluster.wire_client()
        first = wire.send("echo", [b"before"])[0]
        job = busy.next_job()  # held by a live worker through the stall
        idle = cluster.stub_worker("echo", credit=1)
        stall = wire.send("echo", [b"stall"])[0]
        assert Stalling.stalled.wait(30)
        # the loop is back: both workers are alive, nothing was handed elsewhere
        assert set(cluster.workers()) == {busy.name, idle.name}
        assert cluster.stats()["requeued"] == 0
        busy.answer(job)
        idle.answer(idle.next_job())
        assert answers(wire.results(2)) == {first: b"before", stall: b"stall"}
        assert cluster.stats()["duplicates"] == 0
        # nobody was asked to register again
        assert [w for w in busy.welcomes + idle.welcomes if (w.extra or {}).get("reset")] == []


def _pool() -> Dispatcher:
    return Dispatcher(
        "m",
        max_attempts=3,
        send=lambda identity, frames: True,
        fail=lambda job, type_, message: None,
        counters=Counters("m"),
        stats={"requeued": 0, "duplicates": 0},
        logger=logging.getLogger("palm.test.liveness"),
    )


def test_silence_counts_only_up_to_when_the_worker_sockets_were_last_read() -> None:
    pool = _pool()
    pool.join(WorkerInfo(b"w", 1, last_seen=10.0))
    # 5 s later, but the sockets were last read to the end 1 s after it was seen
    pool.expire(15.0, 3.0, read_at=11.0)
    assert b"w" in pool.workers
    # read to the end 4 s after it was seen, and nothing from it: dead
    pool.expire(15.0, 3.0, read_at=14.0)
    assert b"w" not in pool.workers


def test_a_late_loop_gives_every_worker_a_fresh_interval() -> None:
    pool = _pool()
    pool.join(WorkerInfo(b"w", 1, last_seen=10.0))
    pool.expire(20.0, 3.0, grace_s=1.0)  # the loop was late: judged from 20 - 3 + 1
    assert b"w" in pool.workers
    pool.expire(21.5, 3.0)  # another 1.5 s of silence, read to the end: dead
    assert b"w" not in pool.workers
