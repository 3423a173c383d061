"""One scaling controller driving any backend of workers.

:class:`ScaleController` reads the master's backlog (:class:`BacklogProbe`),
asks the :class:`~palm.workers.autoscale.ScalePolicy` how many workers to
have, and has a :class:`Backend` start or stop workers to get there. The
backends (local processes: :class:`palm.workers.local.ProcessBackend`;
containers through the Docker Engine API:
:class:`palm.workers.containers.DockerBackend`) only count, start and stop.

A worker the backend started counts as *starting* until the master lists it
(by name) among its workers, then as *running*; a worker asked to leave is
*stopping* until it has gone. A worker that dies on its own is not put back
blindly: the controller takes it off its desired count, and the policy adds a
worker again only if the backlog still needs one.

Every decision that changes the desired count is logged with its reason and
counted; :meth:`ScaleController.snapshot` gives the gauges (desired, running,
starting, stopping, backlog) and :class:`ScaleCounters` publishes them with
the process's counters (``palm stats``). A cold start (a job arriving at a
pool of zero workers) is timed from the decision to the first worker the
master lists, logged and kept as ``cold_start_s``.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from palm.state.counters import Counters
from palm.workers.autoscale import BacklogProbe, Decision, ScalePolicy

__all__ = ["Backend", "Census", "ScaleController", "ScaleCounters"]

log = logging.getLogger(__name__)


@dataclass
class Census:
    """What a backend has now: the names of its live workers (not leaving),
    how many are leaving, and the names of those that died since last asked."""

    alive: list[str] = field(default_factory=list)
    stopping: int = 0
    died: list[str] = field(default_factory=list)


class Backend(Protocol):
    """What starts and stops workers for a :class:`ScaleController`."""

    kind: str

    def census(self) -> Census:
        """The workers now (reaping those that ended)."""
        ...

    def scale_to(self, desired: int) -> None:
        """Start or stop (gracefully) workers until ``desired`` are alive."""
        ...


class ScaleCounters(Counters):
    """A process's counters with the scaling gauges under ``"scale"``."""

    def __init__(self, server: str, gauges: Callable[[], dict[str, Any]]) -> None:
        super().__init__(server)
        self._gauges = gauges

    def snapshot(self) -> dict[str, Any]:
        out = super().snapshot()
        gauges = self._gauges()
        out["scale"] = gauges
        out["backlog"] = gauges.get("backlog", 0)
        return out


class ScaleController:
    """Follows a master's backlog with a backend of workers; call :meth:`step` now and then."""

    def __init__(self, policy: ScalePolicy, probe: BacklogProbe, backend: Backend) -> None:
        self.policy = policy
        self.probe = probe
        self.backend = backend
        self.desired = len(backend.census().alive)  # its own workers found again
        self.events = 0
        self.backlog = 0
        self.running = 0
        self.starting = 0
        self.stopping = 0
        self.deaths = 0
        self.reason = "not started"
        self.cold_start_s: float | None = None
        self._cold_since: float | None = None
        #: (time, desired, running, backlog) after each step, for plots and tests
        self.history: list[tuple[float, int, int, int]] = []
        self.max_history = 100_000
        self._lock = threading.Lock()

    def step(self, now: float | None = None) -> Decision | None:
        """Read the backlog, decide, act; None when the master did not answer."""
        now = time.monotonic() if now is None else now
        backlog = self.probe.backlog()
        census = self.backend.census()
        if census.died:
            self.deaths += len(census.died)
            self.desired = max(0, self.desired - len(census.died))
            log.warning(
                "%s worker(s) ended on their own: %s; replaced only if the backlog needs them",
                self.backend.kind,
                ", ".join(census.died),
            )
        if backlog is None:
            self._count(census, set(), now)
            return None
        decision = self.policy.decision(self.desired, backlog, now)
        if decision.desired != self.desired:
            self.events += 1
            log.info(
                "scale %s workers %d -> %d: %s",
                self.backend.kind,
                self.desired,
                decision.desired,
                decision.reason,
            )
            if self.desired == 0 and decision.desired > 0 and self._cold_since is None:
                self._cold_since = now
            self.desired = decision.desired
        self.reason = decision.reason
        self.backlog = backlog
        self.backend.scale_to(self.desired)
        census = self.backend.census()
        listed = {str(w.get("name", "")) for w in self.probe.last_workers if not w.get("leaving")}
        self._count(census, listed, now)
        return decision

    def _count(self, census: Census, listed: set[str], now: float) -> None:
        running = sum(1 for name in census.alive if name in listed)
        with self._lock:
            self.running = running
            self.starting = len(census.alive) - running
            self.stopping = census.stopping
            if len(self.history) < self.max_history:
                self.history.append((now, self.desired, running, self.backlog))
        if self._cold_since is not None and running > 0:
            self.cold_start_s = now - self._cold_since
            self._cold_since = None
            log.info(
                "cold start: the first %s worker joined the master %.2f s after the decision",
                self.backend.kind,
                self.cold_start_s,
            )

    def snapshot(self) -> dict[str, Any]:
        """The gauges and counts, JSON-ready."""
        with self._lock:
            return {
                "backend": self.backend.kind,
                "desired": self.desired,
                "running": self.running,
                "starting": self.starting,
                "stopping": self.stopping,
                "backlog": self.backlog,
                "events": self.events,
                "deaths": self.deaths,
                "cold_start_s": self.cold_start_s,
                "reason": self.reason,
                "min": self.policy.min_processes,
                "max": self.policy.max_processes,
            }
