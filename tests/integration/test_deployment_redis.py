"""Masters, workers and servers sharing a real Redis: cache, logs, counters, outages."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from palm import StateError
from palm.call.request import Client
from palm.ops.processes import worker_command
from palm.standalone import ParallelClient
from palm.state.counters import read_stats
from palm.state.store import State
from tests.fixtures.procs import PALM, Processes, alive, free_port, wait_for
from tests.fixtures.redis import RedisProcess

ROOT = Path(__file__).resolve().parents[2]
WORKER = "tests.apps.services:CacheWorker"
FAST_HEARTBEAT_S = 0.2
FAST = ("--heartbeat-interval-s", str(FAST_HEARTBEAT_S))


def cluster(procs: Processes, url: str, workers: int = 2) -> dict[str, Any]:
    env = {"PALM_REDIS_URL": url}
    _, info = procs.master("master", *FAST, "--redis", url)
    for i in range(workers):
        command = worker_command(
            WORKER,
            f"w{i}",
            push=info["worker_push"],
            pull=info["worker_pull"],
            heartbeat_interval_s=FAST_HEARTBEAT_S,
            log_level="WARNING",
        )
        procs.start(command, env=env, stdout=subprocess.DEVNULL)
    with Client(info["db"], "master", timeout_s=5) as probe:
        wait_for(lambda: len(probe.info()["workers"]) >= workers)  # type: ignore[arg-type]
    return info


def client_of(info: dict[str, Any], **options: Any) -> ParallelClient:
    return ParallelClient(info["push"], info["pull"], info["db"], info["name"], **options)


@pytest.mark.timeout(90)
def test_workers_in_different_processes_share_the_cache(
    procs: Processes, redis_proc: RedisProcess
) -> None:
    info = cluster(procs, redis_proc.url)
    with client_of(info) as client:
        assert list(client.job("remember", [b"forty-two"])) == [b"shared"]
        answers = set(client.job("recall", [b""] * 400))
    assert {a.split(b"=")[1] for a in answers} == {b"forty-two"}
    assert {a.split(b"=")[0] for a in answers} == {b"w0", b"w1"}
    assert State(redis_proc.url).get("shared") == b"forty-two"


@pytest.mark.timeout(90)
def test_the_cache_survives_a_redis_restart_and_a_master_restart(
    procs: Processes, redis_proc: RedisProcess
) -> None:
    master, info = procs.master("master", *FAST, "--redis", redis_proc.url)
    with client_of(info) as client:
        key = client.set(b"kept")
    redis_proc.kill()
    redis_proc.restart()
    master.kill()
    master.wait()
    names = ("pull", "push", "worker_pull", "worker_push", "db")
    flags = ("--pull", "--push", "--worker-pull", "--worker-push", "--db")
    args = [x for flag, name in zip(flags, names, strict=True) for x in (flag, info[name])]
    procs.palm("master", "--name", "master", *args, "--redis", redis_proc.url)
    with client_of(info) as client:
        assert client.get(key) == b"kept"


@pytest.mark.timeout(90)
def test_palm_logs_merges_a_master_and_two_workers_in_time_order(
    procs: Processes, redis_proc: RedisProcess
) -> None:
    info = cluster(procs, redis_proc.url)
    with client_of(info, batch=2) as client:
        assert len(list(client.job("chatty", [b"%d" % i for i in range(200)]))) == 200

    def palm_logs() -> str | None:
        out = subprocess.run(
            [*PALM, "logs", "--redis", redis_proc.url, "-n", "1000"],
            capture_output=True,
            text=True,
            timeout=30,
            env=procs.env(),
        )
        assert out.returncode == 0, out.stderr
        seen = "w0 handled" in out.stdout and "w1 handled" in out.stdout and "joined" in out.stdout
        return out.stdout if seen else None

    text = wait_for(palm_logs, timeout_s=30)
    state = State(redis_proc.url)
    from palm.state.logs import read_logs

    got = list(read_logs(state, limit=1000))
    assert {r["worker"] for r in got} >= {"w0", "w1"}
    assert any(r["worker"] == "" and "joined" in r["message"] for r in got)  # the master's own
    times = [r["time"] for r in got]
    assert times == sorted(times)
    assert len(text.splitlines()) >= len(got)


@pytest.mark.timeout(90)
def test_counters_after_a_thousand_jobs(procs: Processes, redis_proc: RedisProcess) -> None:
    info = cluster(procs, redis_proc.url)
    with client_of(info) as client:
        assert len(list(client.job("echo", [b"x"] * 1000))) == 1000
    state = State(redis_proc.url)

    def published() -> dict[str, Any] | None:
        stats = read_stats(state).get("master")
        if stats and stats["functions"].get("echo", {}).get("out") == 1000:
            return stats
        return None

    stats = wait_for(published, timeout_s=15)
    echo = stats["functions"]["echo"]
    assert echo["in"] == 1000 and echo["failed"] == 0
    assert 0 < echo["p50_s"] <= echo["p95_s"] <= echo["p99_s"]
    assert {w for w in stats["workers"]} == {"w0", "w1"}
    out = subprocess.run(
        [*PALM, "stats", "--redis", redis_proc.url], capture_output=True, text=True, timeout=30
    )
    assert "echo" in out.stdout and "1000" in out.stdout


@pytest.mark.timeout(120)
def test_redis_killed_mid_run_loses_no_job(procs: Processes, redis_proc: RedisProcess) -> None:
    info = cluster(procs, redis_proc.url)
    client = client_of(info)
    results: list[bytes] = []
    errors: list[BaseException] = []
    killed = threading.Event()

    def consume() -> None:
        try:
            for n, r in enumerate(client.job("chatty", (b"%d" % i for i in range(5_000))), 1):
                results.append(r)
                if n == 500:
                    redis_proc.kill()
                    killed.set()
        except BaseException as exc:
            errors.append(exc)

    t = threading.Thread(target=consume)
    t.start()
    assert killed.wait(60)
    side = client_of(info)
    with pytest.raises(StateError):
        side.set(b"while redis is down")
    t.join(90)
    assert errors == []
    assert sorted(results) == sorted(b"%d" % i for i in range(5_000))
    redis_proc.restart()
    assert wait_for(lambda: _set_works(side), timeout_s=20)
    side.close()
    client.close()


def _set_works(client: ParallelClient) -> bool:
    try:
        return client.get(client.set(b"back")) == b"back"
    except StateError:
        return False


@pytest.mark.timeout(120)
def test_without_a_redis_url_the_samples_run_on_an_embedded_redis_and_leave_none(
    procs: Processes, tmp_path: Path
) -> None:
    data_dir = tmp_path / "data"
    env = {"PALM_DATA_DIR": str(data_dir)}
    ports = {p: free_port() for p in range(5555, 5561)}
    samples = ROOT / "examples" / "presentation"

    def sample(name: str) -> list[str]:
        text = (samples / name).read_text()
        for fixed, port in ports.items():
            text = text.replace(f":{fixed}'", f":{port}'")
        path = tmp_path / name
        path.write_text(text)
        return [sys.executable, str(path)]

    saved = os.environ.pop("PALM_REDIS_URL")
    try:
        master = procs.start(sample("parallel_master.py"), env=env)
        procs.start([*sample("parallel_worker.py"), "worker1"], env=env)
        client = procs.start(sample("parallel_client.py"), env=env)
        out, _ = client.communicate(timeout=60)
        assert out.count("processed a message") == 10
        first = json.loads((data_dir / "redis.json").read_text())["pid"]
        assert alive(first)
        master.send_signal(signal.SIGTERM)
        assert master.wait(10) == 0
        wait_for(lambda: not alive(first), timeout_s=10)
        # the standalone sample binds the master's old port
        server = procs.start(sample("standalone_server.py"), env=env)
        client = procs.start(sample("standalone_client.py"), env=env)
        out, _ = client.communicate(timeout=60)
        assert out.strip() == "Client got:  b'you sent me a message'"
        second = json.loads((data_dir / "redis.json").read_text())["pid"]
        assert alive(second)
        server.send_signal(signal.SIGTERM)
        assert server.wait(10) == 0
        wait_for(lambda: not alive(second), timeout_s=10)
    finally:
        os.environ["PALM_REDIS_URL"] = saved
    time.sleep(0)
