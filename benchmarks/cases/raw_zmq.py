"""Hand-written pyzmq baselines: the ceiling for Python on this machine.

``--bench throughput --variant V``: client PUSH -> broker -> 2 echo workers -> broker ->
client PULL, the client keeping at most ``WINDOW`` jobs in flight (and at most
``WINDOW_BYTES`` of payload) and the broker draining up to ``DRAIN`` messages per poll.
The variants (each a peer of palm's parallel round trip, named in ``VARIANTS``):

- ``zero-copy``: one message per job, frames passed with ``copy=False``;
- ``copy``: one message per job, plain (copying) frames, cheaper for small messages;
- ``batched``: ``BATCH`` jobs per message, packed into one msgpack frame behind a small
  header frame, unpacked and packed again by each worker per batch, as palm's client and
  workers batch them (the real ceiling for palm's design);
- ``oneway``: PUSH -> PULL into one process that counts, no broker and no answers
  (the physical line for Python here).

``--payload-bytes`` sets the job size (100 B by default). ``--bench latency``: REQ/REP
round trips, one at a time. Every throughput row comes with CPU microseconds per job of
each process (client, broker, workers).
"""

from __future__ import annotations

import argparse
import multiprocessing
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import msgpack
import zmq

from benchmarks.cases.measure import PAYLOAD, Caller, Subject, latencies_in_turn, streams_in_turn
from benchmarks.processes import free_tcp_address, stop_pid
from benchmarks.record import emit
from palm.call.jobs import DEFAULT_MAX_BATCH

WINDOW = 1_000
WINDOW_BYTES = 64 * 2**20
DRAIN = 100
BATCH = DEFAULT_MAX_BATCH  # as palm batches a stream of fast jobs (ParallelClient max_batch)
VARIANTS = {
    "zero-copy": ("raw", "raw pyzmq: PUSH -> broker -> 2 echo workers -> PULL, one message "
                         "per job, copy=False frames"),
    "copy": ("raw-copy", "raw pyzmq: PUSH -> broker -> 2 echo workers -> PULL, one message "
                         "per job, copying frames"),
    "batched": ("raw-batched", f"raw pyzmq: PUSH -> broker -> 2 echo workers -> PULL, "
                               f"{BATCH} jobs per message packed in one msgpack frame"),
    "oneway": ("raw-oneway", "raw pyzmq: one-way PUSH -> PULL, no broker, no answers"),
}  # fmt: skip


def _broker(front_in: str, front_out: str, back_out: str, back_in: str, variant: str) -> None:
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
    zero_copy = variant == "zero-copy"
    while True:
        for source, _ in poller.poll():
            target = routes[source]
            for _ in range(DRAIN):
                try:
                    if variant == "batched":
                        target.send_multipart(source.recv_multipart(zmq.NOBLOCK))
                    else:
                        target.send(
                            source.recv(zmq.NOBLOCK, copy=not zero_copy), copy=not zero_copy
                        )
                except zmq.Again:
                    break


def _echo_worker(pull_from: str, push_to: str, variant: str) -> None:
    ctx = zmq.Context()
    pull = ctx.socket(zmq.PULL)
    pull.connect(pull_from)
    push = ctx.socket(zmq.PUSH)
    push.connect(push_to)
    if variant == "batched":
        while True:
            head, packed = pull.recv_multipart()
            echoed = [item for item in msgpack.unpackb(packed)]
            push.send_multipart([head, msgpack.packb(echoed)])
    zero_copy = variant == "zero-copy"
    while True:
        push.send(pull.recv(copy=not zero_copy), copy=not zero_copy)


def _sink(pull_from: str, push_to: str) -> None:
    """Counts what arrives; after each ``n`` announced by a b"n:<count>" frame, answers once."""
    ctx = zmq.Context()
    pull = ctx.socket(zmq.PULL)
    pull.bind(pull_from)
    push = ctx.socket(zmq.PUSH)
    push.bind(push_to)
    while True:
        expect = int(pull.recv()[2:])
        for _ in range(expect):
            pull.recv()
        push.send(b"done")


def _rep_server(address: str) -> None:
    ctx = zmq.Context()
    rep = ctx.socket(zmq.REP)
    rep.bind(address)
    while True:
        rep.send(rep.recv())


@contextmanager
def _processes(*targets: tuple[Callable[..., None], tuple[Any, ...]]) -> Iterator[list[int]]:
    spawn = multiprocessing.get_context("spawn")
    procs = [spawn.Process(target=fn, args=args, daemon=True) for fn, args in targets]
    for proc in procs:
        proc.start()
    try:
        yield [proc.pid for proc in procs if proc.pid is not None]
    finally:
        for proc in procs:
            if proc.pid is not None:
                stop_pid(proc.pid)
            proc.join()


def _round_trip(push: zmq.Socket[Any], pull: zmq.Socket[Any], payload: bytes, variant: str
                ) -> Callable[[int], int]:  # fmt: skip
    if variant == "oneway":

        def one_way(n: int) -> int:
            push.send(b"n:%d" % n)
            for _ in range(n):
                push.send(payload)
            return n if pull.recv() == b"done" else 0

        return one_way
    per = BATCH if variant == "batched" else 1
    window = max(per, min(WINDOW * per, WINDOW_BYTES // len(payload)))
    # the zero-copy variant's client sends from its own buffer as well (pyzmq copies a
    # frame under 64 KiB all the same); it receives bytes, as palm's caller does
    zero_copy = variant == "zero-copy"

    def count(frames: list[bytes]) -> int:
        return len(msgpack.unpackb(frames[1])) if per > 1 else 1

    def round_trip(n: int) -> int:
        sent = received = 0
        source = iter([payload] * n)
        while received < n:
            while sent < n and sent - received < window:
                if per == 1:
                    push.send(next(source), copy=not zero_copy)
                    sent += 1
                else:
                    items = [next(source) for _ in range(min(per, n - sent))]
                    push.send_multipart([b"header-of-16-bytes", msgpack.packb(items)])
                    sent += len(items)
            received += count(pull.recv_multipart())
            while received < sent:
                try:
                    frames = pull.recv_multipart(zmq.NOBLOCK)
                except zmq.Again:
                    break
                received += count(frames)
        return received

    return round_trip


@contextmanager
def stream_subject(variant: str, payload: bytes) -> Iterator[Subject]:
    """The broker (or sink) and echo workers of ``variant`` up, as a stream subject."""
    key, method = VARIANTS[variant]
    front_in, front_out, back_out, back_in = (free_tcp_address() for _ in range(4))
    if variant == "oneway":
        targets: list[tuple[Callable[..., None], tuple[Any, ...]]] = [
            (_sink, (front_in, front_out))
        ]
        names = ["sink"]
    else:
        worker = (_echo_worker, (back_out, back_in, variant))
        targets = [(_broker, (front_in, front_out, back_out, back_in, variant)), worker, worker]
        names = ["broker", "worker 1", "worker 2"]
    with _processes(*targets) as pids:
        ctx = zmq.Context()
        try:
            push = ctx.socket(zmq.PUSH)
            push.connect(front_in)
            pull = ctx.socket(zmq.PULL)
            pull.connect(front_out)
            round_trip = _round_trip(push, pull, payload, variant)
            yield Subject(key, method, round_trip, dict(zip(names, pids, strict=True)))
        finally:
            ctx.destroy(linger=0)


def throughput(count: int, runs: int, variant: str, payload_bytes: int) -> None:
    payload = PAYLOAD if payload_bytes == len(PAYLOAD) else b"x" * payload_bytes
    params: dict[str, object] = {} if payload_bytes == len(PAYLOAD) else {"payload": payload_bytes}
    with stream_subject(variant, payload) as subject:
        rows = streams_in_turn("throughput", [subject], count, runs, params)
    emit(rows)


@contextmanager
def reqrep_subject() -> Iterator[Caller]:
    """A REP echo server up, and this process's REQ socket calling it, as a latency subject."""
    address = free_tcp_address()
    with _processes((_rep_server, (address,))):
        ctx = zmq.Context()
        try:
            req = ctx.socket(zmq.REQ)
            req.connect(address)

            def call() -> None:
                req.send(PAYLOAD)
                req.recv()

            yield Caller("raw", "raw pyzmq REQ/REP", call)
        finally:
            ctx.destroy(linger=0)


def latency(count: int, runs: int) -> None:
    with reqrep_subject() as subject:
        rows = latencies_in_turn([subject], count, runs)
    emit(rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--bench", choices=["throughput", "latency"], required=True)
    parser.add_argument("--count", type=int, default=100_000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--variant", choices=list(VARIANTS), default="zero-copy")
    parser.add_argument("--payload-bytes", type=int, default=len(PAYLOAD))
    args = parser.parse_args()
    if args.bench == "throughput":
        throughput(args.count, args.runs, args.variant, args.payload_bytes)
    else:
        latency(args.count, args.runs)


if __name__ == "__main__":
    main()
