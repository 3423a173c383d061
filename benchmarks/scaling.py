"""Elastic scaling over time: desired and running workers, and the backlog, during a burst.

    python -m benchmarks.scaling                 # local processes, then containers
    python -m benchmarks.scaling --no-docker     # local processes only

A master (``palm master``) gets a burst of slow jobs after a quiet start; one
:class:`~palm.workers.controller.ScaleController` per run sizes its workers
from zero, first as local processes, then as containers on a Docker engine of
the run's own (tests/fixtures/docker.py: needs root; an empty image with the
virtualenv bind-mounted). Each run lasts until the pool is back at zero. The
plot (``plots/scaling.png``) shows, per backend, the desired and running
workers and the backlog the controller saw; the cold start of each backend is
printed and noted in the plot's title.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from benchmarks.processes import stop_pid
from palm.call.parallel import ParallelClient
from palm.ops.cluster import read_ready
from palm.serve.worker import Worker
from palm.workers.autoscale import BacklogProbe, ScalePolicy
from palm.workers.controller import Backend, ScaleController
from palm.workers.local import ProcessBackend
from palm.workers.pool import WorkerPool

__all__ = ["Napper", "main", "plot", "run"]

ROOT = Path(__file__).resolve().parents[1]
SPEC = "benchmarks.scaling:Napper"
SECRET = "benchmark-scaling"

History = list[tuple[float, int, int, int]]


class Napper(Worker):
    """Sleeps the seconds its payload names (its digits after the first 5 are a tag)."""

    def nap(self, message: bytes) -> bytes:
        time.sleep(float(message[:5]))
        return message


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH", "")) if p)
    env.update(PALM_NO_REDIS="1", PALM_SECRET=SECRET)
    env.pop("PALM_REDIS_URL", None)
    return env


def start_master() -> tuple[subprocess.Popen[str], dict[str, Any]]:
    anyport = "tcp://127.0.0.1:*"
    proc = subprocess.Popen(
        [sys.executable, "-m", "palm", "--log-level", "WARNING", "master", "--name", "master"]
        + [f"--{flag}={anyport}" for flag in ("pull", "push", "worker-pull", "worker-push", "db")]
        + ["--heartbeat-interval-s", "0.2"],
        stdout=subprocess.PIPE,
        text=True,
        env=_env(),
        cwd=ROOT,
        start_new_session=True,
    )
    return proc, read_ready(proc, 30)


def run(
    make_backend: Callable[[str], tuple[Backend, Callable[[], None]]],
    jobs: int,
    nap: float,
    maximum: int,
    step_s: float = 0.25,
    budget_s: float = 180.0,
) -> tuple[History, float | None]:
    """One burst against a fresh master; the controller's history and cold start."""
    master, info = start_master()
    backend, close = make_backend(info["db"])
    probe = BacklogProbe(info["db"])
    policy = ScalePolicy(0, maximum, jobs_per_worker=4, scale_down_after_s=2)
    controller = ScaleController(policy, probe, backend)
    client = ParallelClient(
        info["push"], info["pull"], info["db"], "master", batch=5, timeout_s=budget_s
    )
    payloads = [f"{nap:.3f}{i:07d}".encode() for i in range(jobs)]
    answered: list[bytes] = []
    burst = threading.Thread(target=lambda: answered.extend(client.job("nap", payloads)))
    began = time.monotonic()
    try:
        while time.monotonic() - began < budget_s:
            if not burst.is_alive() and not answered and time.monotonic() - began > 2:
                burst.start()
            controller.step()
            finished = answered and not burst.is_alive()
            if finished and controller.desired == 0 and not backend.census().alive:
                break
            time.sleep(step_s)
        if burst.is_alive():
            burst.join(budget_s)
        if len(answered) != jobs:
            raise RuntimeError(f"{len(answered)} of {jobs} jobs answered")
    finally:
        client.close()
        probe.close()
        close()
        stop_pid(master.pid)
        if master.stdout is not None:
            master.stdout.close()
    history = [(t - began, d, r, b) for t, d, r, b in controller.history]
    return history, controller.cold_start_s


def local_backend(db: str) -> tuple[Backend, Callable[[], None]]:
    pool = WorkerPool(SPEC, processes=0, connect=db, heartbeat_interval_s=0.2, env=_env())
    return ProcessBackend(pool), pool.stop


def plot(runs: dict[str, tuple[History, float | None]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(len(runs), 1, figsize=(8, 3 * len(runs)), squeeze=False)
    for ax, (label, (history, cold)) in zip(axes[:, 0], runs.items(), strict=True):
        t = [h[0] for h in history]
        ax.step(t, [h[1] for h in history], where="post", label="desired", color="tab:blue")
        ax.step(t, [h[2] for h in history], where="post", label="running", color="tab:green")
        ax.set_ylabel("workers")
        ax.set_xlabel("seconds")
        cold_text = f"cold start {cold:.2f} s" if cold is not None else "no cold start seen"
        ax.set_title(f"{label}: {cold_text}")
        backlog = ax.twinx()
        backlog.plot(t, [h[3] for h in history], color="tab:orange", alpha=0.6, label="backlog")
        backlog.set_ylabel("backlog (job messages)")
        lines = ax.get_legend_handles_labels()
        more = backlog.get_legend_handles_labels()
        ax.legend(lines[0] + more[0], lines[1] + more[1], loc="upper right")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=80)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--jobs", type=int, default=3000)
    parser.add_argument("--nap", type=float, default=0.004, help="seconds per job")
    parser.add_argument("--max", type=int, default=4, help="most workers")
    parser.add_argument("--no-docker", action="store_true")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "plots" / "scaling.png")
    args = parser.parse_args()
    runs: dict[str, tuple[History, float | None]] = {}
    runs["local processes"] = run(local_backend, args.jobs, args.nap, args.max)
    if not args.no_docker:
        from palm.workers.containers import DockerBackend
        from tests.fixtures.docker import docker_daemon

        with docker_daemon() as engine:

            def containers(db: str) -> tuple[Backend, Callable[[], None]]:
                backend = DockerBackend(
                    engine.image,
                    SPEC,
                    db,
                    pool="bench",
                    docker_url=engine.url,
                    python=engine.python,
                    heartbeat_interval_s=0.2,
                    environment={"PYTHONPATH": str(ROOT), "PALM_NO_REDIS": "1"}
                    | {"PALM_SECRET": SECRET},
                    volumes=engine.volumes,
                    grace_s=20,
                )

                def close() -> None:
                    backend.remove_all()
                    backend.close()

                return backend, close

            runs["containers (Docker Engine API)"] = run(containers, args.jobs, args.nap, args.max)
    for label, (history, cold) in runs.items():
        peak = max((h[1] for h in history), default=0)
        print(
            f"{label}: peak {peak} workers, cold start {cold if cold is None else round(cold, 2)} s"
        )
    plot(runs, args.out)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
