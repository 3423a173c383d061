"""The scaling controller with worker containers on a real Docker engine.

The engine is the test run's own dockerd (tests/fixtures/docker.py); the
master runs on the host and the containers reach it on the host's network.
A burst of 5,000 slow jobs grows the pool from zero containers to the
maximum; a controller killed and started again finds its containers; a
trickle after the burst sees containers leave while jobs run; the pool ends
at zero; every job is answered exactly once, none requeued.
"""

from __future__ import annotations

import signal
import subprocess
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from palm.call.request import Client
from palm.standalone import ParallelClient
from palm.state.counters import read_stats
from palm.state.store import open_state
from tests.fixtures.docker import DockerEngine, docker_engine  # noqa: F401
from tests.fixtures.procs import PALM, Processes, wait_for
from tests.fixtures.scaling import cold_start_s, naps, trickle

FAST = ("--heartbeat-interval-s", "0.2")
#: quick heartbeats, but a worker starved of CPU for a moment is not declared dead:
#: these tests count requeues, and only a worker leaving may cause none
PATIENT = (*FAST, "--liveness", "15")
MAX = 4
POOL = "boxes"


def start_controller(
    procs: Processes, engine: DockerEngine, db: str, log: Path
) -> subprocess.Popen[str]:
    return procs.start(
        [
            *PALM,
            "--log-level",
            "INFO",
            "worker",
            "tests.apps.services:SlowWorker",
            "--connect",
            db,
            "--name",
            POOL,
            *("--backend", "docker", "--image", engine.image, "--docker-host", engine.url),
            *engine.run_options(),
            *("--env", f"PYTHONPATH={procs.root}", "--env", "PALM_SECRET=test-secret"),
            *("--processes", "0", "--max-processes", str(MAX), "--jobs-per-worker", "4"),
            *("--scale-down-after-s", "1", "--scale-every-s", "0.3", "--grace-s", "20"),
            *FAST,
        ],
        stdout=subprocess.DEVNULL,
        stderr=log.open("a"),
    )


@pytest.mark.timeout(240)
def test_containers_scale_from_zero_to_max_and_back_losing_nothing(
    procs: Processes,
    docker_engine: DockerEngine,  # noqa: F811
    tmp_path: Path,
) -> None:
    import docker

    engine = docker_engine
    api = docker.DockerClient(base_url=engine.url)
    _, info = procs.master("master", *PATIENT)
    log = tmp_path / "controller.log"
    controller = start_controller(procs, engine, info["db"], log)
    probe = Client(info["db"], "master", timeout_s=5)
    client = ParallelClient(
        info["push"], info["pull"], info["db"], "master", batch=5, timeout_s=120
    )

    def containers() -> int:
        return len(api.containers.list(filters={"label": f"palm.pool={POOL}"}, ignore_removed=True))

    def described() -> dict[str, Any]:
        answer: dict[str, Any] = probe.info()
        return answer

    try:
        assert containers() == 0
        # the first job starts the first container; the client just waits
        began = time.monotonic()
        assert list(client.job("nap", [b"0.01"])) == [b"0.01"]
        waited = time.monotonic() - began
        cold = cold_start_s(log, timeout_s=20)
        assert 0 < cold <= waited + 1

        # 5,000 slow jobs (5 a message): the pool grows to its maximum
        burst = naps(5000, "0.004")
        results: list[bytes] = []
        t = threading.Thread(target=lambda: results.extend(client.job("nap", burst)))
        t.start()
        wait_for(lambda: len(described()["workers"]) == MAX, timeout_s=60)
        # the controller dies and comes back: it finds its own containers
        controller.send_signal(signal.SIGKILL)
        controller.wait(10)
        controller = start_controller(procs, engine, info["db"], log)
        wait_for(lambda: "found 4 container(s) of its own" in log.read_text(), timeout_s=30)
        seen: list[int] = []
        while t.is_alive():
            seen.append(containers())
            t.join(0.2)
        assert sorted(results) == sorted(burst)
        assert max(seen) <= MAX

        # a trickle: containers leave while jobs run
        slow = naps(120, "0.05", start=10_000)
        answered, during = trickle(client, described, slow)
        assert sorted(answered) == sorted(slow)
        assert min(during) < max(during)
        stats = described()["stats"]
        assert stats["requeued"] == 0, stats
        assert stats["duplicates"] == 0, stats

        # the gauges are published with the counters
        state = open_state(None, "default")
        try:
            gauges = read_stats(state)[f"{POOL}-scaler"]["scale"]
        finally:
            state.close()
        assert gauges["backend"] == "container"
        assert gauges["max"] == MAX

        # nothing left to do: back to zero containers, each removed
        wait_for(lambda: containers() == 0, timeout_s=60)
        wait_for(lambda: described()["workers"] == [], timeout_s=20)
        wait_for(
            lambda: (
                not api.containers.list(
                    all=True, filters={"label": f"palm.pool={POOL}"}, ignore_removed=True
                )
            ),
            timeout_s=20,
        )
        assert "asked to leave" in log.read_text()
        assert "ended on their own" not in log.read_text()
    finally:
        client.close()
        probe.close()
        controller.send_signal(signal.SIGTERM)
        controller.wait(15)
        for container in api.containers.list(all=True, ignore_removed=True):
            container.remove(force=True)
        api.close()
