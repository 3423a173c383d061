"""palm.testing itself: offline processes, clean shutdown, and how it reports trouble."""

from __future__ import annotations

import os
import threading
from pathlib import Path

import pytest

from palm.errors import ConfigError
from palm.standalone import Master, Server
from palm.state.deployment import Deployment
from palm.testing import LocalMaster, LocalServer, wait_until
from tests.apps.kit import Echo

pytestmark = pytest.mark.timeout(30)


class EchoServer(Server):
    def echo(self, message: bytes) -> bytes:
        return message


def kit_threads() -> list[threading.Thread]:
    # (palm-spawner forks palm's children for every thread and lives with the process)
    return [
        t for t in threading.enumerate() if t.name.startswith("palm") and t.name != "palm-spawner"
    ]


def test_an_offline_deployment_opens_no_redis_whatever_the_environment_says(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("PALM_REDIS_URL", "redis://127.0.0.1:1/0")
    monkeypatch.delenv("PALM_NO_REDIS", raising=False)
    deployment = Deployment("offline", redis_url=False, start_redis=True).open()
    try:
        assert deployment.state is None
    finally:
        deployment.close()


def test_the_local_master_and_its_workers_run_without_redis() -> None:
    assert os.environ.get("PALM_REDIS_URL")  # the test session's Redis is there...
    with LocalMaster() as cluster:
        worker = cluster.add_worker(Echo)
        assert cluster.client().eval("echo", b"x") == b"x"
        # ...and nobody here uses it
        assert cluster.master.deployment.state is None
        assert worker.deployment is not None and worker.deployment.state is None


def test_everything_is_stopped_and_closed_even_when_the_test_fails() -> None:
    assert kit_threads() == []
    with pytest.raises(RuntimeError, match="the test failed"), LocalMaster() as cluster:
        cluster.add_worker(Echo)
        stub = cluster.stub_worker("echo")
        wire = cluster.wire_client()
        client = cluster.client()
        assert client.eval("echo", b"x") == b"x"
        assert kit_threads()
        raise RuntimeError("the test failed")
    assert kit_threads() == []
    assert stub.closed and not stub.alive
    assert wire.closed


def test_the_local_server_closes_its_peers_and_stops_when_the_test_fails() -> None:
    with pytest.raises(RuntimeError, match="the test failed"), LocalServer(EchoServer) as local:
        peer = local.peer()
        assert local.client().job("echo", b"x") == b"x"
        raise RuntimeError("the test failed")
    assert peer.closed
    assert kit_threads() == []


def test_ipc_endpoints_live_in_a_directory_removed_on_exit() -> None:
    with LocalMaster(transport="ipc") as cluster:
        endpoint = cluster.endpoints.db
        assert endpoint.startswith("ipc://")
        directory = Path(endpoint[len("ipc://") :]).parent
        assert directory.is_dir()
        cluster.add_worker(Echo)
        assert cluster.client().eval("echo", b"over ipc") == b"over ipc"
    assert not directory.exists()


def test_restart_needs_a_transport_that_reconnects() -> None:
    with LocalMaster() as cluster, pytest.raises(ConfigError, match="ipc"):
        cluster.restart()


def test_a_master_that_cannot_start_is_reported() -> None:
    class Unbindable(Master):
        def start(self) -> None:
            raise OSError("address in use")

    with pytest.raises(RuntimeError, match="did not start") as caught:
        LocalMaster(master_class=Unbindable).start()
    assert isinstance(caught.value.__cause__, OSError)
    assert kit_threads() == []


def test_a_worker_that_crashes_is_reported_when_the_harness_closes() -> None:
    class Crashing(Echo):
        def start(self) -> None:
            raise RuntimeError("worker crashed")

    with pytest.raises(RuntimeError, match="crashing1 failed") as caught, LocalMaster() as cluster:
        cluster.add_worker(Crashing, wait=False)
    assert str(caught.value.__cause__) == "worker crashed"


def test_wait_until_returns_the_value_or_fails_the_test() -> None:
    assert wait_until(lambda: 42, 0.1) == 42
    with pytest.raises(AssertionError, match="the impossible"):
        wait_until(lambda: None, 0.01, what="the impossible")
