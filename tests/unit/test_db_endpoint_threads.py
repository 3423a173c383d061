"""A hung cache slows nothing: the db endpoint runs cache calls off the master's loop.

The master's cache here is one whose calls block until the test lets them
go, standing for a Redis that stopped answering. Jobs, PING and INFO go on
meanwhile; cache calls are answered with ``StateError`` after the endpoint's
timeout (or at once when too many wait); their late results are dropped.
"""

from __future__ import annotations

import threading
import time
from typing import Any

import pytest

from palm.errors import StateError
from palm.serve.master import Master
from palm.state.cache import MemoryCache
from palm.testing import LocalMaster, RawPeer, wait_until
from palm.wire.discovery import CacheClient
from palm.wire.protocol import Header, Kind, decode
from tests.apps.kit import Echo

pytestmark = pytest.mark.timeout(60)

TIMEOUT_S = 0.3


class HungCache(MemoryCache):
    """A cache whose calls wait for ``release`` while ``hung`` is set (bounded)."""

    def __init__(self) -> None:
        super().__init__()
        self.hung = threading.Event()
        self.release = threading.Event()
        self.calls = 0

    def _wait(self) -> None:
        self.calls += 1
        if self.hung.is_set():
            self.release.wait(30)

    def get(self, key: str) -> bytes | None:
        self._wait()
        return super().get(key)

    def set(self, value: bytes, key: str | None = None) -> str:
        self._wait()
        return super().set(value, key)


class QuickTimeout(Master):
    cache_timeout_s = TIMEOUT_S
    cache_queue = 2


def cluster_with(cache: HungCache, **options: Any) -> LocalMaster:
    return LocalMaster(master_class=QuickTimeout, cache=cache, **options)


def test_a_hung_cache_answers_state_error_promptly_while_jobs_ping_and_info_go_on() -> None:
    cache = HungCache()
    with cluster_with(cache) as cluster:
        cluster.add_worker(Echo)
        client = cluster.client()
        db = CacheClient(cluster.endpoints.db, timeout_s=20)
        try:
            db.set(b"v", "k")
            cache.hung.set()
            started = time.monotonic()
            with pytest.raises(StateError, match="did not answer within"):
                db.get("k")
            # answered by the endpoint's own timeout, far sooner than the client's 20 s
            assert time.monotonic() - started < 10
            # the loop is free: jobs, INFO and PING go on while the cache threads hang
            results = client.job("echo", [b"%d" % i for i in range(200)])
            assert sorted(results) == sorted(b"%d" % i for i in range(200))
            assert cluster.info()["stats"]["jobs_out"] >= 200
            with RawPeer(cluster.endpoints.db) as peer:
                pong = peer.request(Header(Kind.PING), timeout_s=5)
                assert pong.payloads == [b"pong"]
            cache.release.set()
            cache.hung.clear()
            assert wait_until(lambda: _get_or_none(db, "k"), 10, what="the cache back") == b"v"
        finally:
            db.close()
            cache.release.set()


def test_a_full_cache_queue_is_answered_busy_at_once_and_late_results_are_dropped() -> None:
    cache = HungCache()
    with cluster_with(cache) as cluster, RawPeer(cluster.endpoints.db) as peer:
        try:
            cache.hung.set()
            calls = 12
            for i in range(1, calls + 1):
                peer.send([Header(Kind.CACHE_GET, i, key="k").to_wire()])
            replies: dict[int, str] = {}
            deadline = time.monotonic() + 20
            while len(replies) < calls:
                header, _ = decode(peer.recv(max(0.0, deadline - time.monotonic())))
                assert header.id not in replies, f"call {header.id} answered twice"
                assert header.errors, header
                assert header.errors[0].type == "palm.StateError"
                replies[header.id] = header.errors[0].message
            busy = [i for i, m in replies.items() if "busy" in m]
            late = [i for i, m in replies.items() if "did not answer within" in m]
            # two threads hold two calls, two more wait: the rest is refused at once
            assert len(late) <= 4 and len(busy) >= calls - 4
            assert sorted(busy + late) == list(range(1, calls + 1))
            cache.release.set()
            cache.hung.clear()
            # once the threads are through, a new call works and nothing late comes back
            db = CacheClient(cluster.endpoints.db, timeout_s=10)

            def stored() -> bool:
                try:  # the threads first skip the calls that timed out in the queue
                    db.set(b"after", "k")
                except StateError as exc:
                    assert "busy" in str(exc)
                    return False
                return True

            try:
                wait_until(stored, 10.0, what="the queue drained")
                assert db.get("k") == b"after"
            finally:
                db.close()
            pong = peer.request(Header(Kind.PING), timeout_s=5)
            assert pong.payloads == [b"pong"]
            with pytest.raises(AssertionError, match="no message"):
                peer.recv(0.2)
        finally:
            cache.release.set()


def test_the_cache_threads_end_with_the_master() -> None:
    cache = HungCache()
    with cluster_with(cache) as cluster:
        db = CacheClient(cluster.endpoints.db, timeout_s=10)
        try:
            db.set(b"v", "k")
            assert db.get("k") == b"v"
            assert _db_threads()
        finally:
            db.close()
    assert _db_threads() == []


def _db_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith("palm-db-")]


def _get_or_none(db: CacheClient, key: str) -> bytes | None:
    try:
        return db.get(key)
    except StateError:
        return None
