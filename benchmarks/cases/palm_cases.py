"""palm's rows for the message benchmarks, written against palm's public API.

``--bench throughput``: ParallelClient.job -> Master -> 2 echo Workers (100 B messages).
``--bench latency``: standalone Server/Client round trips, one at a time.
``--bench memory``: peak RSS of the master and of the client while streaming many items.
``--curve``: every socket speaks CurveZMQ (keys made for the run), rows keyed ``palm-curve``.
``--handler view``: the workers' echo takes a read-only memoryview of the received frame
(``@zero_copy``) instead of bytes; rows keyed ``palm-view``.
``--handler inline``: the client's large payloads travel through the sockets at every hop
(``shared_memory=False``, as between machines) instead of the client's shared-memory
arena; rows keyed ``palm-inline``.

If palm (or the part of it a benchmark needs) cannot be imported, the case fails with the
ImportError and the launcher reports the row as unavailable.
"""

from __future__ import annotations

import argparse
import itertools
import multiprocessing
import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from benchmarks.cases.measure import PAYLOAD, Caller, Subject, latencies_in_turn, streams_in_turn
from benchmarks.processes import RssPoller, free_tcp_address, stop_pid, tree_size
from benchmarks.record import Row, emit
from benchmarks.timing import timed_s

SERVER_NAME = "bench"
#: the keys directory of a ``--curve`` run (None: plain sockets); children get it as PALM_KEYS
KEYS: str | None = None


@dataclass(frozen=True)
class MasterAddresses:
    pull: str
    push: str
    worker_pull: str
    worker_push: str
    db: str

    @classmethod
    def free(cls) -> MasterAddresses:
        return cls(*(free_tcp_address() for _ in range(5)))


def _run_master(addresses: MasterAddresses) -> None:
    from palm.standalone import Master  # type: ignore[attr-defined]

    Master(
        name=SERVER_NAME,
        pull_address=addresses.pull,
        push_address=addresses.push,
        worker_pull_address=addresses.worker_pull,
        worker_push_address=addresses.worker_push,
        db_address=addresses.db,
        palm=True,
    ).start()


#: the workers' echo: "bytes" (the default API) or "view" (a ``@zero_copy`` memoryview)
HANDLERS = {
    "bytes": ("palm", "palm: ParallelClient -> Master -> 2 workers"),
    "view": ("palm-view", "palm: ParallelClient -> Master -> 2 workers, memoryview handler"),
    # large payloads through the sockets at every hop, as between machines (on one
    # machine they go to the workers through the client's shared-memory arena)
    "inline": ("palm-inline", "palm: ParallelClient(shared_memory=False) -> Master -> 2 workers"),
}


def _run_worker(addresses: MasterAddresses, index: int, handler: str = "bytes") -> None:
    from palm.standalone import Worker  # type: ignore[attr-defined]

    class EchoWorker(Worker):  # type: ignore[misc]
        def echo(self, message: bytes) -> bytes:
            return message

    worker_class = EchoWorker
    if handler == "view":
        from palm import zero_copy

        class ViewEchoWorker(Worker):  # type: ignore[misc]
            @zero_copy
            def echo(self, message: memoryview) -> memoryview:
                return message

        worker_class = ViewEchoWorker
    worker_class(
        f"{SERVER_NAME}-worker-{index}",
        push_address=addresses.worker_push,
        pull_address=addresses.worker_pull,
        db_address=addresses.db,
    ).start()


def _run_server(address: str) -> None:
    from palm.standalone import Server

    class EchoServer(Server):
        def echo(self, message: bytes) -> bytes:
            return message

    EchoServer(SERVER_NAME, address).start()


def _keys() -> dict[str, object]:
    """``keys=`` for this run's palm objects: the run's keys, or plain sockets."""
    return {"keys": KEYS or False}


def _labels(key: str, method: str) -> tuple[str, str]:
    return (f"{key}-curve", f"{method}, CURVE") if KEYS else (key, method)


@contextmanager
def _children(targets: list[tuple[object, tuple[object, ...]]]) -> Iterator[list[int]]:
    spawn = multiprocessing.get_context("spawn")
    procs = [spawn.Process(target=fn, args=args, daemon=True) for fn, args in targets]  # type: ignore[arg-type]
    os.environ["PALM_KEYS"] = KEYS or ""  # what the spawned children's palm objects read
    for proc in procs:
        proc.start()
    try:
        yield [proc.pid for proc in procs if proc.pid is not None]
    finally:
        for proc in procs:
            if proc.pid is not None:
                stop_pid(proc.pid)
            proc.join()


@contextmanager
def _parallel_cluster(
    workers: int = 2, handler: str = "bytes"
) -> Iterator[tuple[object, list[int]]]:
    """A Master and ``workers`` echo Workers; yields (ParallelClient, [master PID,
    worker PIDs...])."""
    from palm.standalone import ParallelClient  # type: ignore[attr-defined]

    addresses = MasterAddresses.free()
    targets: list[tuple[object, tuple[object, ...]]] = [(_run_master, (addresses,))]
    targets += [(_run_worker, (addresses, index, handler)) for index in range(workers)]
    with _children(targets) as pids:
        client = ParallelClient(
            push_address=addresses.push,
            pull_address=addresses.pull,
            db_address=addresses.db,
            server_name=SERVER_NAME,
            **_keys(),
            **({"shared_memory": False} if handler == "inline" else {}),
        )
        try:
            yield client, pids
        finally:
            close = getattr(client, "close", None)
            if close is not None:
                close()


def _stream(client: object, count: int, payload: bytes = PAYLOAD) -> int:
    replies = client.job("echo", itertools.repeat(payload, count), messages=count)  # type: ignore[attr-defined]
    return sum(1 for _ in replies)


@contextmanager
def stream_subject(handler: str, payload: bytes) -> Iterator[Subject]:
    """A master and 2 echo workers (``handler``'s) up, as a stream subject."""
    with _parallel_cluster(handler=handler) as (client, pids):
        names = ["master", *(f"worker {i + 1}" for i in range(len(pids) - 1))]
        yield Subject(*_labels(*HANDLERS[handler]), lambda n: _stream(client, n, payload),
                      dict(zip(names, pids, strict=True)))  # fmt: skip


def throughput(
    count: int, runs: int, payload_bytes: int = len(PAYLOAD), handler: str = "bytes"
) -> None:
    payload = PAYLOAD if payload_bytes == len(PAYLOAD) else b"x" * payload_bytes
    params: dict[str, object] = {} if payload_bytes == len(PAYLOAD) else {"payload": payload_bytes}
    with stream_subject(handler, payload) as subject:
        rows = streams_in_turn("throughput", [subject], count, runs, params)
    emit(rows)


@contextmanager
def request_subject() -> Iterator[Caller]:
    """A standalone echo Server up, and this process's Client calling it, as a latency
    subject (with CURVE keys when the run has them)."""
    from palm.standalone import Client

    address = free_tcp_address()
    with _children([(_run_server, (address,))]):
        client = Client(address, SERVER_NAME, **_keys())  # type: ignore[arg-type]
        try:
            key, method = _labels("palm", "palm standalone Server/Client")
            yield Caller(key, method, lambda: client.job("echo", PAYLOAD))
        finally:
            client.close()


def latency(count: int, runs: int) -> None:
    with request_subject() as subject:
        rows = latencies_in_turn([subject], count, runs)
    emit(rows)


def memory(count: int, runs: int) -> None:
    with _parallel_cluster() as (client, pids):
        master_pid = pids[0]
        _stream(client, min(count, 2_000))
        peaks: dict[str, list[float]] = {"master": [], "client": []}
        rates = []
        processes = tree_size()
        for _ in range(runs):
            with RssPoller({"master": master_pid, "client": os.getpid()}) as poller:
                got = 0

                def run() -> None:
                    nonlocal got
                    got = _stream(client, count)

                seconds = timed_s(run)
            if got != count:
                raise RuntimeError(f"streamed {count} items, got {got} back")
            rates.append(count / seconds)
            for name in peaks:
                peaks[name].append(poller.peak_bytes[name] / 2**20)
    common = {"bench": "memory", "key": "palm", "size": count, "processes": processes}
    method = "palm: ParallelClient -> Master -> 2 workers, 100 B items"
    emit([
        Row(method=method, unit="MiB", better="lower", params={"process": "master"},
            values=peaks["master"], **common),
        Row(method=method, unit="MiB", better="lower", params={"process": "client"},
            values=peaks["client"], **common),
        Row(method=method, unit="msg/s", better="higher", params={"process": "stream"},
            values=rates, **common),
    ])  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--bench", choices=["throughput", "latency", "memory"], required=True)
    parser.add_argument("--count", type=int, default=100_000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--curve", action="store_true", help="CurveZMQ on every socket")
    parser.add_argument("--payload-bytes", type=int, default=len(PAYLOAD), help="throughput only")
    parser.add_argument(
        "--handler", choices=list(HANDLERS), default="bytes", help="throughput only"
    )
    args = parser.parse_args()
    benches = {
        "throughput": lambda count, runs: throughput(count, runs, args.payload_bytes, args.handler),
        "latency": latency,
        "memory": memory,
    }
    global KEYS
    workdir = tempfile.mkdtemp(prefix="palm-bench-keys-") if args.curve else None
    try:
        if workdir is not None:
            from palm.wire.security import generate

            KEYS = str(generate(os.path.join(workdir, "keys")))
        benches[args.bench](args.count, args.runs)
    finally:
        if workdir is not None:
            shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
