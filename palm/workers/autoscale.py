"""Scaling a worker pool with its master's backlog.

The master answers INFO on its db endpoint with the job messages waiting for
a worker (``queued``) and those being run (``inflight``). A pool wants one
worker per ``jobs_per_worker`` of them, within ``[min_processes,
max_processes]``. It grows as soon as it wants more, and shrinks only after
wanting fewer for ``scale_down_after_s``, so a short lull does not stop
workers that are about to be needed again.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass

from palm.call.request import Client
from palm.errors import PalmError
from palm.wire.info import ServiceInfo

__all__ = ["BacklogProbe", "ScalePolicy"]

log = logging.getLogger(__name__)


@dataclass
class ScalePolicy:
    """How many workers a backlog calls for."""

    min_processes: int
    max_processes: int
    jobs_per_worker: int = 4
    scale_down_after_s: float = 10.0

    def __post_init__(self) -> None:
        if not 0 <= self.min_processes <= self.max_processes:
            raise ValueError("need 0 <= min_processes <= max_processes")
        if self.jobs_per_worker < 1:
            raise ValueError("jobs_per_worker must be at least 1")
        self._low_since: float | None = None

    def wanted(self, backlog: int) -> int:
        want = math.ceil(backlog / self.jobs_per_worker)
        return max(self.min_processes, min(self.max_processes, want))

    def decide(self, current: int, backlog: int, now: float | None = None) -> int:
        """The pool size to have now, given ``current`` workers and the backlog."""
        now = time.monotonic() if now is None else now
        want = self.wanted(backlog)
        if want >= current:
            self._low_since = None
            return want
        if self._low_since is None:
            self._low_since = now
        if now - self._low_since >= self.scale_down_after_s:
            self._low_since = None
            return want
        return current


class BacklogProbe:
    """Reads a master's backlog (queued plus in-flight job messages)."""

    def __init__(self, db_address: str, timeout_s: float = 2.0) -> None:
        self.client = Client(db_address, "master", timeout_s=timeout_s)

    def backlog(self) -> int | None:
        try:
            info = ServiceInfo.from_wire(self.client.info())
        except PalmError as exc:
            log.info("no backlog from the master: %s", exc)
            return None
        queued, inflight = info.queued, info.inflight
        return queued + inflight

    def close(self) -> None:
        self.client.close()
