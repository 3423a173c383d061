"""Large payloads through the client's shared-memory arena, with a real master and
real workers: what reaches the workers, and what happens when one cannot read it.

A worker in another PID namespace (as in a container) cannot open the client's
``/proc/<pid>/fd/<fd>``: the client must send those payloads again inline and lose
none of them.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import signal
import subprocess
import sys
import time

import pytest

from palm.errors import ProtocolError
from palm.ops.processes import worker_command
from palm.wire import arena as shared
from tests.fixtures.procs import Processes
from tests.integration.test_large_payloads import FAST, MIB, WORKER, client_of, distinct
from tests.integration.test_large_payloads import start_cluster as start_workers

pytestmark = pytest.mark.skipif(not shared.available(), reason="memfd_create is Linux-only")


@pytest.mark.timeout(120)
def test_large_payloads_reach_the_workers_through_the_arena(procs: Processes) -> None:
    info = start_workers(procs, 2)
    payloads = [distinct(i, MIB + i) for i in range(16)]
    with client_of(info) as client:
        assert client.shared_memory  # the master is on loopback
        echoed = list(client.job("echo", payloads, ordered=True))
        arena = client.arena()
        assert arena is not None
        assert arena.written == len(payloads)  # every one went through it
        assert arena.in_use == 0  # and every slot came back with its answer
        small = list(client.job("echo", [b"a", b"b"], ordered=True))
        assert arena.written == len(payloads)  # small ones go inline
    assert echoed == payloads and small == [b"a", b"b"]
    with client_of(info, shared_memory=False) as inline:
        assert list(inline.job("echo", payloads[:3], ordered=True)) == payloads[:3]
        assert inline.arena() is None


@pytest.mark.timeout(120)
def test_a_worker_killed_with_a_shared_payload_in_hand_loses_nothing(procs: Processes) -> None:
    """Its jobs go to the other worker, which reads them from slots still held."""
    _, info = procs.master("master", *FAST)
    victim = procs.worker(WORKER, "w0", info, *FAST)
    procs.worker(WORKER, "w1", info, *FAST)
    payloads = [distinct(i, MIB) for i in range(8)]
    with client_of(info) as client:
        results = client.job("digest_slowly", payloads)
        first = next(results)  # both workers hold jobs now
        victim.send_signal(signal.SIGKILL)
        rest = list(results)
        arena = client.arena()
        assert arena is not None and arena.in_use == 0
    digests = {hashlib.sha256(p).digest() for p in payloads}
    assert sorted([first, *rest]) == sorted(digests)


@pytest.mark.timeout(120)
@pytest.mark.skipif(shutil.which("unshare") is None, reason="needs util-linux unshare")
def test_a_worker_that_cannot_open_the_arena_gets_the_payloads_inline(
    procs: Processes,
) -> None:
    _, info = procs.master("master", *FAST)
    command = worker_command(
        WORKER, "boxed", push=info["worker_push"], pull=info["worker_pull"], log_level="WARNING"
    )
    # its own PID namespace with its own /proc: the client's PID means nothing there
    procs.start(
        ["unshare", "--pid", "--fork", "--mount-proc", *command, *FAST],
        stdout=subprocess.DEVNULL,
    )
    payloads = [distinct(i, MIB + i) for i in range(6)]
    with client_of(info, timeout_s=60) as client:
        deadline = time.monotonic() + 30
        while not client.workers and time.monotonic() < deadline:  # the worker is in
            list(client.job("echo", [b"ping"]))
            time.sleep(0.1)
        echoed = list(client.job("echo", payloads, ordered=True))
        assert client.arena() is None  # refused: later payloads go inline from the start
        again = list(client.job("echo", payloads[:2], ordered=True))
    assert echoed == payloads and again == payloads[:2]


@pytest.mark.timeout(120)
def test_a_master_whose_hooks_read_payloads_reads_them_from_the_arena(
    procs: Processes,
) -> None:
    """A scatter hook gets the payload itself, never the reference to it."""
    from palm.standalone import ParallelClient
    from tests.integration.test_pipelines import master

    addresses = master(procs, "split")  # a Splitter: scatter and gather hooks
    big = distinct(7, MIB).replace(b":", b";")
    with ParallelClient(
        addresses["push"], addresses["pull"], addresses["db"], "split", timeout_s=60
    ) as client:
        (joined,) = list(client.job("part", [big]))
        arena = client.arena()
        assert arena is not None and arena.written == 1 and arena.in_use == 0
    assert joined == b",".join(big.upper() + b":%d" % i for i in range(10))


def arena_links() -> list[str]:
    """The arenas this process holds open (their memfd names)."""
    links = []
    for fd in os.listdir("/proc/self/fd"):
        try:
            links.append(os.readlink(f"/proc/self/fd/{fd}"))
        except OSError:
            continue  # the descriptor listdir itself used
    return [link for link in links if "palm-arena-" in link]


@pytest.mark.timeout(120)
def test_the_arena_is_gone_after_close_and_after_its_client_is_killed(
    procs: Processes,
) -> None:
    info = start_workers(procs, 1)
    before = arena_links()
    client = client_of(info)
    assert list(client.job("echo", [distinct(0, MIB)])) == [distinct(0, MIB)]
    assert len(arena_links()) == len(before) + 1
    client.close()
    assert arena_links() == before  # closed with the client
    # a client process SIGKILLed: its arena dies with it, and a reference to it reads nothing
    holder = procs.start(
        [sys.executable, "-c", HOLDER], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL
    )
    assert holder.stdout is not None
    ref = bytes.fromhex(holder.stdout.readline().strip())
    assert shared.read_shared(ref, 2 * MIB) == b"p" * MIB
    holder.send_signal(signal.SIGKILL)
    holder.wait(10)
    with pytest.raises(ProtocolError, match="cannot open"):
        shared.read_shared(ref, 2 * MIB)


#: A client process holding one payload in its arena: prints the reference, then waits.
HOLDER = """
import sys, time
from palm.wire.arena import Arena
ref, _ = Arena().put(b"p" * (1 << 20))
print(ref.hex(), flush=True)
time.sleep(600)
"""
