"""The parallel topology with real master and worker processes on loopback."""

from __future__ import annotations

import asyncio
import random
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import psutil
import pytest

from palm import JobLost, ProtocolError, RemoteError, TimeoutError
from palm.standalone import ParallelClient
from tests.fixtures.procs import PALM, Processes, free_port, wait_for

ROOT = Path(__file__).resolve().parents[2]
SAMPLES = ROOT / "examples" / "presentation"
WORKER = "tests.apps.services:EchoWorker"
FAST = ("--heartbeat-interval-s", "0.2")


def client_of(info: dict[str, Any], **options: Any) -> ParallelClient:
    return ParallelClient(info["push"], info["pull"], info["db"], info["name"], **options)


def start_cluster(procs: Processes, workers: int, *extra: str) -> dict[str, Any]:
    _, info = procs.master("master", *FAST, *extra)
    info["workers"] = [procs.worker(WORKER, f"w{i}", info, *FAST) for i in range(workers)]
    wait_for(lambda: len(master_info(info)["workers"]) >= workers)
    return info


def master_info(info: dict[str, Any]) -> dict[str, Any]:
    from palm.call.request import Client

    with Client(info["db"], info["name"], timeout_s=5) as probe:
        return probe.info()


@pytest.mark.timeout(90)
def test_presentation_sample_runs_as_four_processes(procs: Processes, tmp_path: Path) -> None:
    ports = {p: free_port() for p in range(5555, 5561)}

    def sample(name: str) -> str:
        text = (SAMPLES / name).read_text()
        for fixed, port in ports.items():
            text = text.replace(f":{fixed}'", f":{port}'")
        path = tmp_path / name
        path.write_text(text)
        return str(path)

    master = procs.start([sys.executable, sample("parallel_master.py")])
    procs.start([sys.executable, sample("parallel_worker.py"), "worker1"])
    procs.start([sys.executable, sample("parallel_worker.py"), "worker2"])
    client = procs.start([sys.executable, sample("parallel_client.py")])
    out, _ = client.communicate(timeout=60)
    assert client.returncode == 0
    lines = out.split()
    replies = [line for line in out.splitlines() if line.strip()]
    assert len(replies) == 10
    assert all(r.endswith(" processed a message'") and r.startswith("b'worker") for r in replies)
    assert lines
    master.send_signal(signal.SIGTERM)
    assert master.wait(10) == 0


@pytest.mark.timeout(180)
def test_a_worker_killed_mid_stream_loses_and_doubles_nothing(procs: Processes) -> None:
    info = start_cluster(procs, 3)
    victim = random.Random(7).choice(info["workers"])
    kill_at = random.Random(8).randrange(2_000, 15_000)
    client = client_of(info, window=500)
    seen: dict[bytes, int] = {}
    for n, result in enumerate(client.job("tag", (b"%d" % i for i in range(20_000)))):
        seen[result] = seen.get(result, 0) + 1
        if n == kill_at:
            victim.kill()
    assert len(seen) == 20_000
    assert set(seen) == {b"ok:%d" % i for i in range(20_000)}
    assert set(seen.values()) == {1}
    client.close()


@pytest.mark.timeout(180)
def test_a_poison_job_fails_after_three_attempts_while_others_complete(procs: Processes) -> None:
    _, info = procs.master("master", *FAST)
    pool = procs.start(
        [
            *PALM,
            "--log-level",
            "WARNING",
            "worker",
            WORKER,
            "--push",
            info["worker_push"],
            "--pull",
            info["worker_pull"],
            "--processes",
            "2",
            *FAST,
        ],
        stdout=subprocess.DEVNULL,
    )
    client = client_of(info)
    payloads = [b"%d" % i for i in range(200)]
    payloads.insert(57, b"poison")
    outcomes = list(client.job("poison", payloads, errors="yield", timeout_s=120))
    lost = [o for o in outcomes if isinstance(o, RemoteError)]
    good = [o for o in outcomes if isinstance(o, bytes)]
    assert len(lost) == 1 and isinstance(lost[0], JobLost)
    assert "died 3 times" in str(lost[0])
    assert sorted(good) == sorted(b"ok:" + p for p in payloads if p != b"poison")
    client.close()
    pool.send_signal(signal.SIGTERM)
    assert pool.wait(15) == 0


@pytest.mark.timeout(120)
def test_jobs_wait_for_workers_and_finish_when_one_connects(procs: Processes) -> None:
    info = start_cluster(procs, 2)
    for w in info["workers"]:
        w.kill()
    client = client_of(info)
    results: list[bytes] = []
    done = threading.Event()

    def consume() -> None:
        results.extend(client.job("tag", [b"%d" % i for i in range(1_000)], timeout_s=60))  # type: ignore[misc]
        done.set()

    t = threading.Thread(target=consume)
    t.start()
    assert not done.wait(1.5)  # nobody to run them yet
    procs.worker(WORKER, "late", info, *FAST)
    t.join(60)
    assert done.is_set()
    assert sorted(results) == sorted(b"ok:%d" % i for i in range(1_000))
    client.close()


@pytest.mark.timeout(120)
def test_two_clients_at_once_get_disjoint_complete_results(procs: Processes) -> None:
    info = start_cluster(procs, 2)
    out: dict[str, list[bytes]] = {}

    def run(tag: str) -> None:
        with client_of(info) as client:
            out[tag] = list(client.job("echo", [f"{tag}-{i}".encode() for i in range(5_000)]))  # type: ignore[misc]

    threads = [threading.Thread(target=run, args=(tag,)) for tag in ("a", "b")]
    for t in threads:
        t.start()
    for t in threads:
        t.join(100)
    assert sorted(out["a"]) == sorted(f"a-{i}".encode() for i in range(5_000))
    assert sorted(out["b"]) == sorted(f"b-{i}".encode() for i in range(5_000))


@pytest.mark.timeout(120)
def test_ordered_results_come_in_submission_order(procs: Processes) -> None:
    info = start_cluster(procs, 2)
    with client_of(info, batch=4) as client:
        payloads = [b"%d" % i for i in range(2_000)]
        assert list(client.job("jitter", payloads, ordered=True)) == payloads
        unordered = list(client.job("jitter", payloads))
        assert sorted(unordered) == sorted(payloads)


@pytest.mark.timeout(60)
def test_errors_in_worker_code_travel_back(procs: Processes) -> None:
    info = start_cluster(procs, 1)
    with client_of(info) as client:
        with pytest.raises(RemoteError) as err:
            list(client.job("boom", [b"x"]))
        assert err.value.remote_type == "RuntimeError"
        assert "worker boom x" in str(err.value)
        outcomes = list(client.job("nope", [b"x"], errors="yield"))
        assert "has function 'nope'" in str(outcomes[0])
        assert list(client.job("echo", [b"fine"])) == [b"fine"]


@pytest.mark.timeout(60)
def test_the_client_timeout_fires_without_workers_and_the_client_recovers(procs: Processes) -> None:
    info = start_cluster(procs, 0)
    client = client_of(info)
    with pytest.raises(TimeoutError, match=r"job\(s\) of master\.echo outstanding"):
        list(client.job("echo", [b"x"], timeout_s=1.0))
    procs.worker(WORKER, "w", info, *FAST)
    # the abandoned job may still be answered; only this call's result comes back
    assert list(client.job("echo", [b"y"], timeout_s=30)) == [b"y"]
    client.close()


@pytest.mark.timeout(120)
def test_workers_register_again_with_a_restarted_master(procs: Processes) -> None:
    master, info = procs.master("master", *FAST)
    procs.worker(WORKER, "w", info, *FAST)
    with client_of(info) as client:
        assert list(client.job("echo", [b"before"])) == [b"before"]
    master.kill()
    master.wait()
    procs.master_again(info, *FAST)
    with client_of(info) as client:
        assert list(client.job("echo", [b"after"], timeout_s=30)) == [b"after"]


@pytest.mark.timeout(60)
def test_eval_runs_one_job_and_raises_its_error(procs: Processes) -> None:
    info = start_cluster(procs, 2)
    with client_of(info) as client:
        assert client.eval("echo", b"one") == b"one"
        assert [client.eval("tag", b"%d" % i) for i in range(500)] == [
            b"ok:%d" % i for i in range(500)
        ]
        with pytest.raises(RemoteError) as err:
            client.eval("boom", b"x")
        assert err.value.remote_type == "RuntimeError"
        with pytest.raises(RemoteError, match="has function 'nope'"):
            client.eval("nope", b"x")
        assert client.eval("echo", b"after errors") == b"after errors"


@pytest.mark.timeout(60)
def test_eval_times_out_without_workers_and_ignores_the_late_answer(procs: Processes) -> None:
    info = start_cluster(procs, 0)
    with client_of(info, heartbeat_interval_s=0.2) as client:
        with pytest.raises(TimeoutError, match=r"1 job of master\.echo outstanding"):
            client.eval("echo", b"late", timeout_s=1.0)
        procs.worker(WORKER, "w", info, *FAST)
        # the abandoned job is answered first; only this call's result is taken
        assert client.eval("echo", b"mine", timeout_s=30) == b"mine"


@pytest.mark.timeout(120)
def test_eval_sends_its_job_again_to_a_restarted_master(procs: Processes) -> None:
    master, info = procs.master("master", *FAST)
    with client_of(info, heartbeat_interval_s=0.2) as client:
        result: list[bytes] = []
        caller = threading.Thread(target=lambda: result.append(client.eval("echo", b"held")))
        caller.start()
        # the master holds the job (no workers yet) when it dies: only the
        # client still has it, and sends it again once it meets the new master
        wait_for(lambda: master_info(info)["queued"] == 1)
        master.kill()
        master.wait()
        procs.master_again(info, *FAST)
        procs.worker(WORKER, "w", info, *FAST)
        caller.join(60)
        assert result == [b"held"]
        assert client.eval("echo", b"next") == b"next"


@pytest.mark.timeout(120)
def test_map_returns_results_in_order_and_names_the_failing_item(procs: Processes) -> None:
    _, info = procs.master("master", *FAST)
    for i in range(2):
        procs.worker("palm.serve.worker:FunctionWorker", f"f{i}", info, *FAST)
    wait_for(lambda: len(master_info(info)["workers"]) >= 2)
    with client_of(info, secret="test-secret") as client:
        assert client.map(lambda x: x * x, range(10_000)) == [x * x for x in range(10_000)]
        assert client.map(str.upper, ["a", "b"], chunksize=1) == ["A", "B"]
        with pytest.raises(RemoteError) as err:
            client.map(lambda x: 1 // (x - 1234), range(5_000))
        assert err.value.index == 1234
        assert err.value.remote_type == "ZeroDivisionError"
    with (
        client_of(info, secret="wrong", timeout_s=2) as intruder,
        pytest.raises(ProtocolError, match="signature"),
    ):
        intruder.map(abs, [1])


@pytest.mark.timeout(60)
def test_the_asyncio_flavour_shares_the_same_behaviour(procs: Processes) -> None:
    _, info = procs.master("master", *FAST)
    procs.worker(WORKER, "w", info, *FAST)
    procs.worker("palm.serve.worker:FunctionWorker", "f", info, *FAST)
    wait_for(lambda: len(master_info(info)["workers"]) >= 2)

    async def main() -> tuple[list[Any], list[Any]]:
        client = client_of(info, secret="test-secret")
        got = [r async for r in client.ajob("echo", [b"%d" % i for i in range(100)], ordered=True)]
        squares = await client.amap(lambda x: x * x, range(100))
        client.close()
        return got, squares

    got, squares = asyncio.run(main())
    assert got == [b"%d" % i for i in range(100)]
    assert squares == [x * x for x in range(100)]


@pytest.mark.timeout(60)
def test_progress_bar_shows_the_total(procs: Processes, capsys: pytest.CaptureFixture[str]) -> None:
    info = start_cluster(procs, 1)
    with client_of(info) as client:
        assert len(list(client.job("echo", [b"x"] * 300, progress=True))) == 300
    err = capsys.readouterr().err
    assert "300/300" in err


@pytest.mark.timeout(60)
def test_the_cache_on_the_db_endpoint(procs: Processes) -> None:
    info = start_cluster(procs, 0)
    with client_of(info) as client:
        key = client.set(b"value")
        assert client.get(key) == b"value"
        client.set(b"other", key="fixed")
        assert client.get("fixed") == b"other"
        assert client.delete("fixed") is True
        assert client.delete("fixed") is False
        with pytest.raises(KeyError):
            client.get("fixed")


@pytest.mark.timeout(600)
@pytest.mark.slow
def test_a_million_item_generator_keeps_the_master_small(procs: Processes) -> None:
    master, info = procs.master("master", *FAST)
    for i in range(2):
        procs.worker(WORKER, f"w{i}", info, *FAST)
    wait_for(lambda: len(master_info(info)["workers"]) >= 2)
    proc = psutil.Process(master.pid)
    peak = 0
    count = 0
    with client_of(info) as client:
        for count, _ in enumerate(client.job("echo", (b"x" * 100 for _ in range(1_000_000))), 1):
            if count % 20_000 == 0:
                peak = max(peak, proc.memory_info().rss)
    peak = max(peak, proc.memory_info().rss)
    assert count == 1_000_000
    assert peak < 200 * 1024 * 1024, f"master peaked at {peak / 2**20:.0f} MiB"
    time.sleep(0)
