"""A hung Redis slows no job, and a paused worker's late results count once.

Real processes: a master and two workers, a real redis-server stopped with
SIGSTOP (a hang, not a crash: connections stay open and nothing answers).
"""

from __future__ import annotations

import os
import signal
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from palm.call.parallel import ParallelClient
from palm.call.request import Client
from palm.errors import StateError
from palm.testing import WireClient, answers
from palm.wire.discovery import CacheClient
from tests.apps.services import RUNS_DIR_ENV
from tests.fixtures.procs import PALM, Processes, ready, wait_for

if TYPE_CHECKING:
    from tests.fixtures.redis import RedisProcess

FAST = ("--heartbeat-interval-s", "0.2")
JOBS = 20_000


def start_master(procs: Processes, log: Path, env: dict[str, str] | None = None) -> dict[str, Any]:
    """A master whose stderr (its warnings) goes to ``log``."""
    any_port = "tcp://127.0.0.1:*"
    addresses = ("--pull", "--push", "--worker-pull", "--worker-push", "--db")
    with log.open("w") as err:
        proc = procs.start(
            [
                *PALM,
                "--log-level",
                "WARNING",
                "master",
                "--name",
                "master",
                *(arg for flag in addresses for arg in (flag, any_port)),
                *FAST,
            ],
            env=env,
            stderr=err,
        )
    return ready(proc)


def master_info(info: dict[str, Any]) -> dict[str, Any]:
    with Client(info["db"], info["name"], timeout_s=10) as probe:
        return probe.info()


def worker_pids(info: dict[str, Any]) -> set[int]:
    return {w["pid"] for w in master_info(info)["workers"]}


class CacheReader(threading.Thread):
    """Reads one cache key in a loop until stopped: how long each read took, and its outcome."""

    def __init__(self, db_address: str) -> None:
        super().__init__(name="test-cache-reader", daemon=True)
        self.db_address = db_address
        self.done = threading.Event()
        self.reading = threading.Event()
        self.reads: list[tuple[float, bytes | StateError]] = []

    def run(self) -> None:
        # the client's own timeout is long: only the endpoint's answer bounds a read
        cache = CacheClient(self.db_address, timeout_s=60)
        try:
            while not self.done.wait(0.02):
                self.reading.set()
                started = time.monotonic()
                outcome: bytes | StateError
                try:
                    outcome = cache.get("k")
                except StateError as exc:
                    outcome = exc
                self.reads.append((time.monotonic() - started, outcome))
        finally:
            cache.close()

    def stop(self) -> list[tuple[float, bytes | StateError]]:
        self.done.set()
        self.join(120)
        assert not self.is_alive()
        return self.reads


def timed_stream(info: dict[str, Any], tag: str) -> tuple[float, list[tuple[float, Any]]]:
    """Stream JOBS jobs while a client reads the cache; seconds taken, and the reads."""
    reader = CacheReader(info["db"])
    reader.start()
    assert reader.reading.wait(30)
    payloads = [b"%s%d" % (tag.encode(), i) for i in range(JOBS)]
    with ParallelClient(
        info["push"], info["pull"], info["db"], info["name"], timeout_s=120, batch=1
    ) as client:
        started = time.monotonic()
        results = list(client.job("tag", payloads))
        elapsed = time.monotonic() - started
    reads = reader.stop()
    assert sorted(results) == sorted(b"ok:" + p for p in payloads)  # no JobLost, nothing lost
    return elapsed, reads


@pytest.mark.timeout(300)
def test_a_hung_redis_slows_no_job_and_kills_no_worker(
    procs: Processes, redis_proc: RedisProcess, tmp_path: Path
) -> None:
    env = {"PALM_REDIS_URL": redis_proc.url}
    log = tmp_path / "master.err"
    info = start_master(procs, log, env)
    for i in range(2):
        procs.worker("tests.apps.services:EchoWorker", f"w{i}", info, *FAST)
    wait_for(lambda: len(worker_pids(info)) == 2)
    pids = worker_pids(info)
    set_key(info, b"v")

    before, reads = timed_stream(info, "a")
    assert reads and all(outcome == b"v" for _, outcome in reads)

    os.kill(redis_proc.pid, signal.SIGSTOP)
    try:
        hung, reads = timed_stream(info, "b")
    finally:
        os.kill(redis_proc.pid, signal.SIGCONT)
    assert reads
    for took, outcome in reads:
        assert isinstance(outcome, StateError), outcome
        assert took < 10  # the endpoint's timeout (1 s), far from the client's 60 s

    # the cache works again, and so does the stream
    wait_for(lambda: read_key(info) == b"v", timeout_s=30)
    after, reads = timed_stream(info, "c")
    assert reads and all(outcome == b"v" for _, outcome in reads)

    # throughput with Redis hung stays within 2x of the same stream with Redis up
    assert hung / max(before, after) < 2.0, (before, hung, after)
    # no worker was declared dead on the way
    state = master_info(info)
    assert {w["pid"] for w in state["workers"]} == pids
    assert state["stats"]["requeued"] == 0
    assert state["stats"]["failed"] == 0
    assert "is gone" not in log.read_text()


def set_key(info: dict[str, Any], value: bytes) -> None:
    cache = CacheClient(info["db"], timeout_s=10)
    try:
        cache.set(value, "k")
    finally:
        cache.close()


def read_key(info: dict[str, Any]) -> bytes | None:
    cache = CacheClient(info["db"], timeout_s=10)
    try:
        return cache.get("k")
    except StateError:
        return None
    finally:
        cache.close()


def runs_in(runs_dir: Path) -> int:
    """Jobs the :class:`~tests.apps.services.NotingWorker` processes ran so far, in all."""
    return sum(path.stat().st_size for path in runs_dir.iterdir() if path.name.isdigit())


def holder(runs_dir: Path) -> int | None:
    """The pid of the worker that took the ``hold`` job, once it runs it."""
    held = [path.name for path in runs_dir.iterdir() if path.name.startswith("held-")]
    return int(held[0].removeprefix("held-")) if held else None


def credit_of(info: dict[str, Any], pid: int) -> int | None:
    """The credit the master counts for the worker of process ``pid``."""
    return next((w["credit"] for w in master_info(info)["workers"] if w["pid"] == pid), None)


@pytest.mark.timeout(300)
@pytest.mark.parametrize("paused", ["mid-job", "idle"])
def test_a_paused_worker_declared_dead_comes_back_and_every_job_is_answered_once(
    procs: Processes, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, paused: str
) -> None:
    """Nothing is lost, nothing is answered twice, each late result counts once.

    ``mid-job``: the worker is stopped while it runs a job, with one more
    job handed to it; ``idle``: it is stopped before the stream, so the jobs
    it is handed wait unread in its socket.
    """
    runs_dir = tmp_path / "runs"
    runs_dir.mkdir()
    monkeypatch.setenv(RUNS_DIR_ENV, str(runs_dir))  # the workers note each job they run
    release = tmp_path / "release"  # the hold job answers once this exists
    info = start_master(procs, tmp_path / "master.err")
    workers = {
        procs.worker("tests.apps.services:NotingWorker", f"w{i}", info, *FAST).pid for i in range(2)
    }
    wait_for(lambda: len(worker_pids(info)) == 2)
    jobs = 300
    wire = WireClient(info["push"], info["pull"], info["name"], timeout_s=30)
    victim = min(workers)
    try:
        try:
            if paused == "idle":
                os.kill(victim, signal.SIGSTOP)
                sent = {wire.send("nap", [b"0.01"])[0] for _ in range(jobs)}
            else:
                sent = {wire.send("hold", [str(release).encode()])[0]}
                sent |= {wire.send("nap", [b"0.01"])[0] for _ in range(jobs - 1)}
                # stopped while it runs the hold job: that one's result comes late for sure
                victim = wait_for(lambda: holder(runs_dir), timeout_s=60)
                # and once it holds one more job behind it (none of its jobs ends meanwhile)
                wait_for(lambda: credit_of(info, victim) == 0, timeout_s=60)
                os.kill(victim, signal.SIGSTOP)
            # silent for longer than the liveness deadline: declared dead, its jobs go on
            wait_for(lambda: victim not in worker_pids(info), timeout_s=60)
            assert worker_pids(info) == workers - {victim}
            release.touch()  # mid-job: the other worker runs the hold job again, to its end
            got = wire.results(jobs, timeout_s=120)
            requeued = master_info(info)["stats"]["requeued"]
            assert requeued >= (2 if paused == "mid-job" else 1)  # what it held then
        finally:
            release.touch()
            os.kill(victim, signal.SIGCONT)
        # The worker comes back in the pool once the session it was paused in
        # is over: it runs nothing more of what it held then. It finished the
        # job it was running, maybe others it had read; those still unread in
        # its socket when that session ended went with it (the other worker
        # answered them): how many depends on its threads' timing on resuming.
        wait_for(lambda: victim in worker_pids(info), timeout_s=60)

        def settled() -> dict[str, Any] | None:
            stats: dict[str, Any] = master_info(info)["stats"]
            # a job that ran twice: its second result is a duplicate, dropped
            twice = runs_in(runs_dir) - jobs  # counted after the stats: results trail runs
            assert 0 <= stats["duplicates"] <= twice <= requeued, (stats, twice, requeued)
            return stats if stats["duplicates"] == twice else None

        # every late result arrives and is dropped as a duplicate, each counted once
        stats = wait_for(settled, timeout_s=60)
        assert stats["duplicates"] >= (1 if paused == "mid-job" else 0)
        assert stats["failed"] == 0
        assert stats["jobs_out"] == jobs
        # every job answered exactly once at the client, nothing more after
        got += wire.sync(timeout_s=10)
        outcomes = answers(got)  # AssertionError if a job came twice
        assert set(outcomes) == sent
        assert set(outcomes.values()) == {b"slept 0.01"} | (
            {b"released"} if paused == "mid-job" else set()
        )
    finally:
        wire.close()
