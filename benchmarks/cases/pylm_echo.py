"""pylm 0.14.4, palm's predecessor: Master -> 2 Workers, fed by its parallel Client.

Runs in pylm's own virtual environment. Written from pylm's documented API
(``pylm.servers.Master``/``Worker``, ``pylm.clients.Client``); pylm has no flow control,
so the whole stream is handed to its client at once, as its documentation shows.
"""

from __future__ import annotations

import argparse
import itertools
import logging
import multiprocessing

from benchmarks.cases.measure import PAYLOAD, Subject, streams_in_turn
from benchmarks.processes import free_tcp_address, stop_pid
from benchmarks.record import emit

NAME = "master"


def _run_master(pull: str, pub: str, worker_pull: str, worker_push: str, db: str) -> None:
    from pylm.servers import Master  # type: ignore[import-not-found]

    Master(NAME, pull, pub, worker_pull, worker_push, db, log_level=logging.WARNING).start()


def _run_worker(index: int, db: str) -> None:
    from pylm.servers import Worker  # type: ignore[import-not-found]

    class EchoWorker(Worker):  # type: ignore[misc]
        def echo(self, message: bytes) -> bytes:
            return message

    EchoWorker(f"worker-{index}", db, log_level=logging.WARNING).start()


def throughput(count: int, runs: int) -> None:
    from pylm.clients import Client  # type: ignore[import-not-found]

    pull, pub, worker_pull, worker_push, db = (free_tcp_address() for _ in range(5))
    spawn = multiprocessing.get_context("spawn")
    procs = [spawn.Process(target=_run_master, args=(pull, pub, worker_pull, worker_push, db))]
    procs += [spawn.Process(target=_run_worker, args=(index, db)) for index in range(2)]
    for proc in procs:  # workers ask the master's cache for its addresses; REQ waits for it
        proc.start()
    try:
        client = Client(NAME, db, logging_level=logging.WARNING)

        def round_trip(n: int) -> int:
            replies = client.job(f"{NAME}.echo", itertools.repeat(PAYLOAD, n), messages=n)
            return sum(1 for _ in replies)

        names = ("master", "worker 1", "worker 2")
        pids = {name: proc.pid for name, proc in zip(names, procs, strict=True) if proc.pid}
        subject = Subject("pylm", "pylm 0.14.4: Client -> Master -> 2 workers", round_trip, pids)
        rows = streams_in_turn("throughput", [subject], count, runs)
    finally:
        for proc in procs:
            if proc.pid is not None:
                stop_pid(proc.pid)
            proc.join()
    emit(rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--count", type=int, default=100_000)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    throughput(args.count, args.runs)


if __name__ == "__main__":
    main()
