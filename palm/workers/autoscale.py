"""The scaling decision of worker pools, written once for every backend.

The master answers INFO on its db endpoint with the job messages waiting for
a worker (``queued``) and those being run (``inflight``); their sum is the
backlog. :class:`ScalePolicy` turns the backlog into the number of workers to
have, a pure function of what it is told (times included), so it is tested
without processes or clocks:

* it wants one worker per ``jobs_per_worker`` of backlog (the target backlog
  per worker), within ``[min_processes, max_processes]``, like the elastic
  app tier that runs between 0 and 19 instances;
* it scales out once the backlog per worker has stayed above the target for
  ``scale_up_window_s`` (0: at once); from zero workers it starts one at once,
  so the first job of a pool scaled to zero waits only for a cold start;
* it scales in only after wanting fewer workers for ``scale_down_after_s``
  (the cool-down), counted again from every scale event, and only down to what
  the backlog needs at a target lowered by ``hysteresis`` (a fraction): a
  backlog between the two targets moves nothing, so a steady trickle never
  makes a pool flap.

Every decision comes with its reason (:class:`Decision`), which the controller
(:mod:`palm.workers.controller`) logs and counts.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass
from typing import Any

from palm.call.request import Client
from palm.errors import PalmError
from palm.wire.info import ServiceInfo

__all__ = ["BacklogProbe", "Decision", "ScalePolicy"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Decision:
    """How many workers to have, and why."""

    desired: int
    reason: str


@dataclass
class ScalePolicy:
    """How many workers a backlog calls for (see the module's docstring)."""

    min_processes: int
    max_processes: int
    jobs_per_worker: float = 4
    scale_down_after_s: float = 10.0
    scale_up_window_s: float = 0.0
    hysteresis: float = 0.25

    def __post_init__(self) -> None:
        if not 0 <= self.min_processes <= self.max_processes:
            raise ValueError("need 0 <= min_processes <= max_processes")
        if self.jobs_per_worker <= 0:
            raise ValueError("jobs_per_worker must be above 0")
        if not 0 <= self.hysteresis < 1:
            raise ValueError("hysteresis is a fraction: 0 <= hysteresis < 1")
        if self.scale_down_after_s < 0 or self.scale_up_window_s < 0:
            raise ValueError("windows are zero or more seconds")
        self._high_since: float | None = None
        self._low_since: float | None = None
        self._last_event: float | None = None

    def _bounded(self, want: int) -> int:
        return max(self.min_processes, min(self.max_processes, want))

    def wanted(self, backlog: int) -> int:
        """Workers for ``backlog`` at the target, within the bounds."""
        return self._bounded(math.ceil(backlog / self.jobs_per_worker))

    def kept(self, backlog: int) -> int:
        """Workers for ``backlog`` at the lowered target: the floor of a scale-in."""
        target = self.jobs_per_worker * (1 - self.hysteresis)
        return self._bounded(math.ceil(backlog / target))

    def decide(self, current: int, backlog: int, now: float | None = None) -> int:
        """The pool size to have now, given ``current`` workers and the backlog."""
        return self.decision(current, backlog, now).desired

    def decision(self, current: int, backlog: int, now: float | None = None) -> Decision:
        """:meth:`decide` with its reason."""
        now = time.monotonic() if now is None else now
        want = self.wanted(backlog)
        if current < self.min_processes:
            return self._event(now, self.min_processes, f"below the minimum {self.min_processes}")
        if current > self.max_processes:
            return self._event(now, self.max_processes, f"above the maximum {self.max_processes}")
        if want > current:
            self._low_since = None
            if current == 0:
                return self._event(now, want, f"backlog {backlog} and no worker: cold start")
            if self._high_since is None:
                self._high_since = now
            held = now - self._high_since
            if held >= self.scale_up_window_s:
                return self._event(
                    now,
                    want,
                    f"backlog {backlog} above {self.jobs_per_worker:g} per worker for {held:.1f} s",
                )
            return Decision(current, f"backlog {backlog} high for {held:.1f} s, waiting")
        self._high_since = None
        floor = self.kept(backlog)
        if floor >= current:
            self._low_since = None
            return Decision(current, f"backlog {backlog} fits {current} worker(s)")
        if self._low_since is None:
            self._low_since = now
        quiet = now - max(self._low_since, self._last_event or self._low_since)
        if quiet >= self.scale_down_after_s:
            return self._event(
                now, floor, f"backlog {backlog} needs {floor} worker(s) for {quiet:.1f} s"
            )
        return Decision(current, f"backlog {backlog} low for {quiet:.1f} s, cooling down")

    def _event(self, now: float, desired: int, reason: str) -> Decision:
        self._high_since = self._low_since = None
        self._last_event = now
        return Decision(desired, reason)


class BacklogProbe:
    """Reads a master's backlog (queued plus in-flight job messages)."""

    def __init__(self, db_address: str, timeout_s: float = 2.0) -> None:
        self.client = Client(db_address, "master", timeout_s=timeout_s)
        #: the workers the master listed at the last reading (name, pid, host...)
        self.last_workers: list[dict[str, Any]] = []

    def backlog(self) -> int | None:
        try:
            info = ServiceInfo.from_wire(self.client.info())
        except PalmError as exc:
            log.info("no backlog from the master: %s", exc)
            return None
        self.last_workers = list(info.workers)
        return info.queued + info.inflight

    def close(self) -> None:
        self.client.close()
