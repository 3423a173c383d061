"""Hand-written pyzmq baselines: the ceiling for Python on this machine.

``--bench throughput``: client PUSH -> broker -> 2 echo workers -> broker -> client PULL,
the client keeping at most ``WINDOW`` messages in flight and the broker draining up to
``DRAIN`` messages per poll. ``--bench latency``: REQ/REP round trips, one at a time.
"""

from __future__ import annotations

import argparse
import multiprocessing
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import zmq

from benchmarks.cases.measure import PAYLOAD, latency_rows, stream_row
from benchmarks.processes import free_tcp_address, stop_pid
from benchmarks.record import emit

WINDOW = 1_000
DRAIN = 100


def _broker(front_in: str, front_out: str, back_out: str, back_in: str) -> None:
    ctx = zmq.Context()
    from_client = ctx.socket(zmq.PULL)
    from_client.bind(front_in)
    to_client = ctx.socket(zmq.PUSH)
    to_client.bind(front_out)
    to_workers = ctx.socket(zmq.PUSH)
    to_workers.bind(back_out)
    from_workers = ctx.socket(zmq.PULL)
    from_workers.bind(back_in)
    poller = zmq.Poller()
    poller.register(from_client, zmq.POLLIN)
    poller.register(from_workers, zmq.POLLIN)
    routes = {from_client: to_workers, from_workers: to_client}
    while True:
        for source, _ in poller.poll():
            target = routes[source]
            for _ in range(DRAIN):
                try:
                    frame = source.recv(zmq.NOBLOCK, copy=False)
                except zmq.Again:
                    break
                target.send(frame, copy=False)


def _echo_worker(pull_from: str, push_to: str) -> None:
    ctx = zmq.Context()
    pull = ctx.socket(zmq.PULL)
    pull.connect(pull_from)
    push = ctx.socket(zmq.PUSH)
    push.connect(push_to)
    while True:
        push.send(pull.recv(copy=False), copy=False)


def _rep_server(address: str) -> None:
    ctx = zmq.Context()
    rep = ctx.socket(zmq.REP)
    rep.bind(address)
    while True:
        rep.send(rep.recv())


@contextmanager
def _processes(*targets: tuple[Callable[..., None], tuple[Any, ...]]) -> Iterator[None]:
    spawn = multiprocessing.get_context("spawn")
    procs = [spawn.Process(target=fn, args=args, daemon=True) for fn, args in targets]
    for proc in procs:
        proc.start()
    try:
        yield
    finally:
        for proc in procs:
            if proc.pid is not None:
                stop_pid(proc.pid)
            proc.join()


def throughput(count: int, runs: int) -> None:
    front_in, front_out, back_out, back_in = (free_tcp_address() for _ in range(4))
    worker = (_echo_worker, (back_out, back_in))
    with _processes((_broker, (front_in, front_out, back_out, back_in)), worker, worker):
        ctx = zmq.Context()
        push = ctx.socket(zmq.PUSH)
        push.connect(front_in)
        pull = ctx.socket(zmq.PULL)
        pull.connect(front_out)

        def round_trip(n: int) -> int:
            sent = received = 0
            while received < n:
                while sent < n and sent - received < WINDOW:
                    push.send(PAYLOAD)
                    sent += 1
                pull.recv()
                received += 1
                while received < sent:
                    try:
                        pull.recv(zmq.NOBLOCK)
                    except zmq.Again:
                        break
                    received += 1
            return received

        row = stream_row(
            "throughput",
            "raw",
            "raw pyzmq: PUSH -> Python broker -> 2 echo workers -> PULL",
            round_trip,
            count,
            runs,
        )
        ctx.destroy(linger=0)
    emit([row])


def latency(count: int, runs: int) -> None:
    address = free_tcp_address()
    with _processes((_rep_server, (address,))):
        ctx = zmq.Context()
        req = ctx.socket(zmq.REQ)
        req.connect(address)

        def call() -> None:
            req.send(PAYLOAD)
            req.recv()

        rows = latency_rows("raw", "raw pyzmq REQ/REP", call, count, runs)
        ctx.destroy(linger=0)
    emit(rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--bench", choices=["throughput", "latency"], required=True)
    parser.add_argument("--count", type=int, default=100_000)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    {"throughput": throughput, "latency": latency}[args.bench](args.count, args.runs)


if __name__ == "__main__":
    main()
