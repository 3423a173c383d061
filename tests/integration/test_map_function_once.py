"""A map function travels once per worker, then by its digest (real master and workers).

A :class:`~palm.ops.cluster.LocalCluster` runs a real master and worker
processes; the client runs in the test. What the client puts in each chunk is
recorded by wrapping :func:`palm.wire.shipping.encode_chunk`, and each chunk
sent again with the function's bytes by wrapping the vetting's
``with_function``.
"""

from __future__ import annotations

import asyncio
import os
import signal
import time
from collections.abc import Iterator
from typing import Any

import pytest

from palm.ops.cluster import LocalCluster
from palm.wire import shipping, vetting


def cube(x: int) -> int:
    return x * x * x


@pytest.fixture
def cluster() -> Iterator[LocalCluster]:
    with LocalCluster(workers=2) as running:
        try:
            running.wait_for_workers(2, timeout_s=60)
            yield running
        finally:
            for proc in running.workers:  # SIGKILL whatever the stop left
                if proc.poll() is None:
                    proc.kill()


@pytest.fixture
def shipped(monkeypatch: pytest.MonkeyPatch) -> dict[str, list[int]]:
    """How many function bytes each chunk carried, and each chunk made full again."""
    seen: dict[str, list[int]] = {"chunks": [], "again": []}
    encode, full = shipping.encode_chunk, vetting.with_function

    def recording_encode(secret: bytes, digest: bytes, fn: bytes, items: list[Any]) -> bytes:
        seen["chunks"].append(len(fn))
        return encode(secret, digest, fn, items)

    def recording_full(chunk: bytes, fn: bytes) -> bytes:
        seen["again"].append(len(fn))
        return full(chunk, fn)

    monkeypatch.setattr(shipping, "encode_chunk", recording_encode)
    monkeypatch.setattr(vetting, "with_function", recording_full)
    return seen


def test_the_second_map_sends_the_digest_only(
    cluster: LocalCluster, shipped: dict[str, list[int]]
) -> None:
    assert cluster.map(cube, range(2000)) == [cube(x) for x in range(2000)]
    first = list(shipped["chunks"])
    assert sum(1 for n in first if n) <= 2 + len(shipped["again"])  # once per worker
    shipped["chunks"].clear()
    shipped["again"].clear()
    assert cluster.map(cube, range(500)) == [cube(x) for x in range(500)]
    assert shipped["chunks"] and not any(shipped["chunks"])  # every chunk lean
    # a worker that had no chunk of the first map may ask once; no more than that
    assert len(shipped["again"]) <= 2


def test_a_new_worker_asks_for_the_function_and_gets_it(
    cluster: LocalCluster, shipped: dict[str, list[int]]
) -> None:
    assert cluster.map(cube, range(100)) == [cube(x) for x in range(100)]
    # the old workers go (SIGKILL: their caches die with them), a fresh one comes
    for proc in cluster.workers:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(30)
    cluster.add_worker()
    shipped["again"].clear()
    assert cluster.map(cube, range(300), timeout_s=60) == [cube(x) for x in range(300)]
    assert shipped["again"], "the new worker ran lean chunks without asking for the function"
    assert all(n > 0 for n in shipped["again"])


def test_amap_ships_once_too_and_a_worker_restarted_asks_again(
    cluster: LocalCluster, shipped: dict[str, list[int]]
) -> None:
    client = cluster.client()
    assert asyncio.run(client.amap(cube, range(200))) == [cube(x) for x in range(200)]
    shipped["chunks"].clear()
    shipped["again"].clear()
    assert asyncio.run(client.amap(cube, range(300))) == [cube(x) for x in range(300)]
    assert shipped["chunks"] and not any(shipped["chunks"])  # lean
    asked = len(shipped["again"])
    # one worker dies and another takes its place: its cache is empty
    os.kill(cluster.workers[0].pid, signal.SIGKILL)
    cluster.workers[0].wait(30)
    cluster.add_worker()
    shipped["chunks"].clear()
    # until the new worker, registered a moment from now, has the function: it asks
    # for it, or the client, told by the master that there are more workers than it
    # shipped the function to, sends it whole with a first chunk (twenty maps can
    # all end before the new worker has registered)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        assert asyncio.run(client.amap(cube, range(400), timeout_s=60)) == [
            cube(x) for x in range(400)
        ]
        if len(shipped["again"]) > asked or any(shipped["chunks"]):
            break
    assert len(shipped["again"]) > asked or any(shipped["chunks"])


def test_maps_of_one_chunk_reach_every_worker_and_then_go_lean(
    cluster: LocalCluster, shipped: dict[str, list[int]]
) -> None:
    client = cluster.client()
    for x in range(12):  # one item: one chunk a map, fewer chunks than workers
        assert client.map(cube, [x]) == [cube(x)]
    # the first chunk of each of the first maps carries the function until every
    # worker may have it; a worker that got none asks (and the next map is full)
    full = sum(1 for n in shipped["chunks"] if n)
    assert full <= 2 + len(shipped["again"]) * 2
    assert len(shipped["again"]) <= 2
    shipped["chunks"].clear()
    shipped["again"].clear()
    for x in range(6):
        assert client.map(cube, [x]) == [cube(x)]
    assert not any(shipped["chunks"]) and not shipped["again"]
