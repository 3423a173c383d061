"""Nothing unauthenticated is unpickled, in either direction of ``map``.

Real master and worker processes on loopback, and a rogue worker (raw pyzmq)
that answers map chunks with pickles that would run code on the client.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from palm.errors import ConfigError
from palm.ops.processes import worker_command
from palm.standalone import ParallelClient
from tests.fixtures.procs import Processes, ready, wait_for

FAST = ("--heartbeat-interval-s", "0.2")
FUNCTION_WORKER = "palm.serve.worker:FunctionWorker"


def client_of(info: dict[str, Any], **options: Any) -> ParallelClient:
    return ParallelClient(info["push"], info["pull"], info["db"], info["name"], **options)


def worker_count(info: dict[str, Any]) -> int:
    from palm.call.request import Client

    with Client(info["db"], info["name"], timeout_s=5) as probe:
        return len(probe.info()["workers"])


def rogue(procs: Processes, info: dict[str, Any], marker: Path) -> subprocess.Popen[str]:
    proc = procs.start(
        [
            sys.executable,
            "-m",
            "tests.apps.rogue_worker",
            info["worker_push"],
            info["worker_pull"],
            str(marker),
        ]
    )
    ready(proc)
    return proc


def forged_count(marker: Path) -> int:
    count = Path(f"{marker}.count")
    return int(count.read_text() or 0) if count.exists() else 0


@pytest.mark.timeout(180)
def test_a_rogue_worker_cannot_run_code_on_the_client_nor_change_results(
    procs: Processes, tmp_path: Path
) -> None:
    marker = tmp_path / "pwned"
    _, info = procs.master("master", *FAST)
    rogue(procs, info, marker)
    wait_for(lambda: worker_count(info) >= 1)
    procs.worker(FUNCTION_WORKER, "genuine", info, *FAST)
    wait_for(lambda: worker_count(info) >= 2)
    with client_of(info, secret="test-secret", timeout_s=60) as client:
        items = list(range(300))
        assert client.map(lambda x: x * 3, items, chunksize=2) == [x * 3 for x in items]
        dropped = client.rejected_answers.count
        async_results = _amap(client, items)
        assert async_results == [x + 1 for x in items]
    assert forged_count(marker) > 0  # the rogue did answer chunks...
    assert dropped > 0  # ...and its answers were counted as dropped
    assert client.rejected_answers.count >= forged_count(marker) - 4  # (credit in flight)
    assert not marker.exists()  # ...and never unpickled


def _amap(client: ParallelClient, items: list[int]) -> list[Any]:
    import asyncio

    return asyncio.run(client.amap(lambda x: x + 1, items, chunksize=3))


@pytest.mark.timeout(120)
def test_with_only_forgeries_the_map_fails_naming_them(procs: Processes, tmp_path: Path) -> None:
    from palm.errors import ProtocolError

    marker = tmp_path / "pwned"
    _, info = procs.master("master", *FAST)
    rogue(procs, info, marker)
    wait_for(lambda: worker_count(info) >= 1)
    with client_of(info, secret="test-secret", timeout_s=3) as client:
        with pytest.raises(ProtocolError, match="failed authentication"):
            client.map(abs, [1, 2, 3])
        assert client.rejected_answers.count > 0
    assert not marker.exists()


@pytest.mark.timeout(60)
def test_a_client_with_another_secret_gets_no_answer_and_says_why(procs: Processes) -> None:
    from palm.errors import ProtocolError

    _, info = procs.master("master", *FAST)
    procs.worker(FUNCTION_WORKER, "genuine", info, *FAST)
    wait_for(lambda: worker_count(info) >= 1)
    with (
        client_of(info, secret="wrong", timeout_s=2) as intruder,
        pytest.raises(ProtocolError, match="signature does not match"),
    ):
        intruder.map(abs, [1])


def test_no_secret_and_an_endpoint_off_loopback_is_refused_before_connecting(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("PALM_SECRET", raising=False)

    def no_sockets(self: ParallelClient) -> Any:
        raise AssertionError("map opened sockets before refusing")

    monkeypatch.setattr(ParallelClient, "_make_sockets", no_sockets)
    # never contacted: the refusal comes first
    client = ParallelClient("tcp://10.255.255.1:1", "tcp://127.0.0.1:2", None, "master")
    with pytest.raises(ConfigError, match="PALM_SECRET") as err:
        client.map(abs, [1])
    assert "tcp://10.255.255.1:1" in str(err.value)
    assert "same PALM_SECRET on the client and on every worker" in str(err.value)
    client.close()


@pytest.mark.timeout(120)
def test_on_loopback_a_client_and_workers_without_a_secret_share_the_local_one(
    procs: Processes, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("PALM_SECRET", raising=False)
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "data"))
    no_secret = {"PALM_SECRET": ""}  # (an empty PALM_SECRET is no secret)
    _, info = procs.master("master", *FAST)
    command = worker_command(
        FUNCTION_WORKER, "local", push=info["worker_push"], pull=info["worker_pull"]
    )
    worker = procs.start([*command, *FAST], env=no_secret, stdout=subprocess.DEVNULL)
    wait_for(lambda: worker_count(info) >= 1)
    with client_of(info, timeout_s=30) as client:
        assert client.map(lambda x: -x, range(50)) == [-x for x in range(50)]
    assert (tmp_path / "data" / "palm" / "local-secret").stat().st_mode & 0o777 == 0o600
    assert worker.poll() is None
