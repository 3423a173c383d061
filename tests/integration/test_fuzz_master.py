"""Fuzzing a real master process on all five of its sockets.

A master (``palm master``) and a real worker run as processes; raw pyzmq
sockets send them random bytes, wrong frame counts and mutations of valid
JOB, READY, CREDIT, HELLO, HEARTBEAT and RESULT messages, a fixed count
within a time bound. Afterwards the master is alive, a normal job succeeds,
and its memory and open file descriptors did not grow beyond a small bound.
"""

from __future__ import annotations

import random
import time
from typing import Any

import psutil
import pytest
import zmq

from palm.standalone import ParallelClient
from palm.wire.messages import control, job_message
from palm.wire.protocol import Header, Kind
from palm.wire.sockets import make_socket
from tests.fixtures.procs import Processes, wait_for

WORKER = "tests.apps.services:EchoWorker"
FAST = ("--heartbeat-interval-s", "0.2")
MESSAGES = 20_000
TIME_BOUND_S = 30.0
SOCKETS = ("pull", "push", "worker_pull", "worker_push", "db")


def _templates(rng: random.Random) -> list[list[bytes]]:
    """Valid messages of every kind the master reads, to mutate."""
    client = rng.randbytes(16)
    return [
        job_message(client, 1, "master.echo", [b"a"]),
        job_message(client, 2, "master.echo", [b"a", b"bc", b"d"]),
        job_message(client, 5, "master.echo", [b"x" * 40, b"y"], pack=False),
        control(Kind.READY, credit=1, pid=1, host="h", name="fuzz", functions=["echo"]),
        control(Kind.CREDIT, credit=1),
        control(Kind.HELLO, client, previous="topic", name="n"),
        control(Kind.HEARTBEAT, client, probe={"at": 1}),
        control(Kind.HEARTBEAT, w=rng.randbytes(16)),
        [
            Header(Kind.RESULT, 1, client, "master.echo", extra={"w": b"w" * 16}).to_wire(),
            b"r",
        ],
        control(Kind.BYE),
        control(Kind.PING),
        control(Kind.INFO),
        [Header(Kind.CACHE_GET, 0, key="k").to_wire()],
    ]


def _mutate(rng: random.Random, frames: list[bytes]) -> list[bytes]:
    frames = list(frames)
    how = rng.randrange(7)
    if how == 0:  # random bytes, any frame count
        return [rng.randbytes(rng.randrange(0, 64)) for _ in range(rng.randrange(1, 5))]
    if how == 1:  # wrong frame count
        extra = rng.randbytes(rng.randrange(0, 8))
        return [*frames, extra] if rng.random() < 0.5 else frames[:1]
    i = rng.randrange(len(frames))
    frame = bytearray(frames[i])
    for _ in range(rng.randrange(1, 4)):
        if not frame:
            break
        at = rng.randrange(len(frame))
        if how in (2, 3):
            frame[at] = rng.randrange(256)
        elif how == 4:
            del frame[at:]
        else:
            frame[at:at] = rng.randbytes(rng.randrange(1, 4))
    frames[i] = bytes(frame)
    return frames


def _usage(proc: psutil.Process) -> tuple[int, int]:
    return proc.memory_info().rss, proc.num_fds()


def _client(info: dict[str, Any]) -> ParallelClient:
    return ParallelClient(info["push"], info["pull"], info["db"], info["name"], timeout_s=20)


def _workers(info: dict[str, Any]) -> list[str]:
    from palm.call.request import Client

    with Client(info["db"], info["name"], timeout_s=5) as probe:
        return sorted(w["name"] for w in probe.info()["workers"])


@pytest.mark.timeout(180)
def test_fuzzing_every_socket_leaves_the_master_serving(procs: Processes) -> None:
    master, info = procs.master("master", *FAST)
    procs.worker(WORKER, "w0", info, *FAST)
    wait_for(lambda: _workers(info) == ["w0"])
    watched = psutil.Process(master.pid)
    with _client(info) as client:
        assert client.eval("echo", b"warm") == b"warm"
    rng = random.Random(20240611)
    senders: dict[str, zmq.Socket[bytes]] = {}
    try:
        for label in SOCKETS:
            kind = zmq.PUSH if label in ("pull", "worker_pull") else zmq.DEALER
            sock = make_socket(kind, hwm=1000)
            sock.setsockopt(zmq.LINGER, 0)
            sock.connect(info[label])
            senders[label] = sock
        templates = _templates(rng)
        baseline: tuple[int, int] | None = None
        deadline = time.monotonic() + TIME_BOUND_S
        sent = 0
        for n in range(MESSAGES):
            if time.monotonic() > deadline:
                break
            label = SOCKETS[n % len(SOCKETS)]
            sock = senders[label]
            frames = _mutate(rng, rng.choice(templates))
            try:
                sock.send_multipart(frames, zmq.NOBLOCK)
                sent += 1
            except zmq.Again:
                pass
            if sock.type == zmq.DEALER:
                while sock.poll(0, zmq.POLLIN):  # take what the master answers
                    sock.recv_multipart()
            if n == 1000:  # memory and descriptors once every socket is in use
                baseline = _usage(watched)
        assert sent >= MESSAGES // 2, f"only {sent} of {MESSAGES} messages went out"
        assert master.poll() is None, "the master died under fuzzing"
    finally:
        for sock in senders.values():
            sock.close(0)
    # workers the fuzzing registered never heartbeat: wait until only the real one is left
    wait_for(lambda: _workers(info) == ["w0"], timeout_s=30)
    with _client(info) as client:
        assert client.eval("echo", b"after the storm") == b"after the storm"
        assert list(client.job("echo", [b"%d" % i for i in range(50)])) == [
            b"%d" % i for i in range(50)
        ]
    assert master.poll() is None
    assert baseline is not None
    rss, fds = _usage(watched)
    assert rss - baseline[0] < 64 * 1024 * 1024, (baseline, rss)
    assert fds - baseline[1] <= 16, (baseline, fds)
