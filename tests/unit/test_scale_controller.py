"""The scaling controller with a fake master and backend: counts, deaths, cold starts."""

from __future__ import annotations

import logging
from typing import Any

import pytest

from palm.workers.autoscale import ScalePolicy
from palm.workers.controller import Census, ScaleController, ScaleCounters


class FakeProbe:
    def __init__(self) -> None:
        self.value: int | None = 0
        self.last_workers: list[dict[str, Any]] = []

    def backlog(self) -> int | None:
        return self.value


class FakeBackend:
    kind = "fake"

    def __init__(self, alive: int = 0) -> None:
        self.alive = [f"w{i}" for i in range(alive)]
        self.died: list[str] = []
        self.next = alive

    def census(self) -> Census:
        died, self.died = self.died, []
        return Census(list(self.alive), 0, died)

    def scale_to(self, desired: int) -> None:
        while len(self.alive) < desired:
            self.alive.append(f"w{self.next}")
            self.next += 1
        del self.alive[desired:]

    def kill(self, name: str) -> None:
        self.alive.remove(name)
        self.died.append(name)


def make(alive: int = 0, **policy: Any) -> tuple[ScaleController, FakeProbe, FakeBackend]:
    probe, backend = FakeProbe(), FakeBackend(alive)
    controller = ScaleController(ScalePolicy(0, 4, **policy), probe, backend)  # type: ignore[arg-type]
    return controller, probe, backend


def test_it_finds_its_own_workers_again_and_logs_each_decision(
    caplog: pytest.LogCaptureFixture,
) -> None:
    controller, probe, backend = make(alive=2, jobs_per_worker=2, scale_down_after_s=5)
    assert controller.desired == 2
    probe.value = 100
    with caplog.at_level(logging.INFO, "palm.workers.controller"):
        controller.step(now=0)
    assert len(backend.alive) == 4
    assert controller.events == 1
    assert "2 -> 4" in caplog.text and "backlog 100" in caplog.text
    probe.last_workers = [{"name": "w0"}, {"name": "w1"}, {"name": "w2"}]
    controller.step(now=1)
    gauges = controller.snapshot()
    assert (gauges["desired"], gauges["running"], gauges["starting"]) == (4, 3, 1)


def test_a_dead_worker_is_replaced_only_while_the_backlog_needs_it() -> None:
    controller, probe, backend = make(alive=0, jobs_per_worker=1, scale_down_after_s=60)
    probe.value = 4
    controller.step(now=0)
    assert len(backend.alive) == 4
    backend.kill("w1")
    controller.step(now=1)  # still 4 jobs: replaced
    assert len(backend.alive) == 4 and "w1" not in backend.alive
    assert controller.deaths == 1
    probe.value = 0
    controller.step(now=2)  # cooling down: nobody stopped yet
    backend.kill("w0")
    controller.step(now=3)  # nothing waits: not replaced
    assert len(backend.alive) == 3
    assert controller.desired == 3


def test_a_cold_start_is_timed_from_the_decision_to_the_first_worker_listed() -> None:
    controller, probe, backend = make(alive=0)
    controller.step(now=10)
    assert backend.alive == []
    probe.value = 1
    controller.step(now=11)
    assert backend.alive == ["w0"]
    controller.step(now=12)
    assert controller.cold_start_s is None
    probe.last_workers = [{"name": "w0"}]
    controller.step(now=13.5)
    assert controller.cold_start_s == pytest.approx(2.5)


def test_a_silent_master_changes_nothing() -> None:
    controller, probe, backend = make(alive=1)
    probe.value = None
    assert controller.step(now=0) is None
    assert backend.alive == ["w0"]


def test_the_gauges_travel_with_the_counters() -> None:
    controller, _, _ = make(alive=1)
    counters = ScaleCounters("pool-scaler", controller.snapshot)
    snap = counters.snapshot()
    assert snap["scale"]["desired"] == 1
    assert snap["scale"]["backend"] == "fake"
