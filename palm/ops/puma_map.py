"""Where ``palm.puma.puma_map`` runs: a deployment's master by address, a local
cluster started once and reused, or the workers ``puma_start()`` runs alone."""

from __future__ import annotations

import math
import os
import threading
import time
import warnings
from collections.abc import Callable, Iterable
from typing import Any, TextIO

from palm.call.parallel import ParallelClient
from palm.errors import ConfigError
from palm.ops.cluster import LocalCluster
from palm.serve.worker import _connectable, _host_of
from palm.wire.discovery import server_info
from palm.wire.shipping import local_secret

__all__ = ["MapWorkers", "chunksize", "map_at", "map_locally", "stop_local"]

_local: LocalCluster | None = None
_local_lock = threading.Lock()


def chunksize(items: list[Any]) -> int:
    """The chunk size PUMA maps with: about the square root of the item count."""
    return max(1, math.isqrt(len(items)))


def map_at(address: str, fn: Callable[[Any], Any], items: list[Any]) -> list[Any]:
    """Map on the workers of the master answering INFO at ``address``."""
    info = server_info(address, 10.0)
    host = _host_of(address)
    try:
        push, pull = info.addresses["push"], info.addresses["pull"]
    except KeyError as exc:
        raise ConfigError(f"the server at {address} takes no map jobs") from exc
    with ParallelClient(
        _connectable(str(push), host), _connectable(str(pull), host), address, info.name
    ) as client:
        result: list[Any] = client.map(fn, items, chunksize=chunksize(items))
        return result


def local_cluster() -> LocalCluster | None:
    """The local cluster :func:`map_locally` started, if it runs."""
    return _local


def map_locally(fn: Callable[[Any], Any], items: list[Any], workers: int) -> list[Any]:
    """Map on this process's local cluster, started on first use (with a warning
    saying how long it took) and reused by every later call."""
    global _local
    with _local_lock:
        if _local is None:
            started = time.monotonic()
            cluster = LocalCluster(workers=workers, name="puma-map").start()
            took = time.monotonic() - started
            _local = cluster
            warnings.warn(
                f"puma_map: no PUMA deployment is configured or running, so a local cluster "
                f"of {workers} workers was started ({took:.1f} s); later calls reuse it. "
                "puma_start() or puma_config({'address': ...}) to use a deployment",
                RuntimeWarning,
                stacklevel=2,
            )
        cluster = _local
    result: list[Any] = cluster.map(fn, items, chunksize=chunksize(items))
    return result


def stop_local() -> None:
    """Stop the local cluster :func:`map_locally` started, if any."""
    global _local
    with _local_lock:
        cluster, _local = _local, None
    if cluster is not None:
        cluster.stop()


class MapWorkers:
    """What ``puma_start()`` runs with no service: the workers of ``puma_map``."""

    def __init__(self, workers: int) -> None:
        # clients of this user on this machine sign with the same secret, unasked
        secret = os.environ.get("PALM_SECRET") or local_secret().decode()
        self.cluster = LocalCluster(workers=workers, name="puma", secret=secret)

    @property
    def url(self) -> str:
        return self.cluster.addresses["db"]

    def start(self) -> MapWorkers:
        self.cluster.start()
        return self

    def stop(self) -> None:
        self.cluster.stop()

    def print_urls(self, out: TextIO | None = None) -> None:
        print(
            f"PUMA map workers ({self.cluster.worker_count}) ready; puma_map address: {self.url}",
            file=out,
            flush=True,
        )

    def map(self, function: Callable[[Any], Any], data: Iterable[Any]) -> list[Any]:
        items = list(data)
        result: list[Any] = self.cluster.map(function, items, chunksize=chunksize(items))
        return result
