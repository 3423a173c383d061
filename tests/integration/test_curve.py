"""CurveZMQ with real processes: who may register, submit, read the cache, and read the wire."""

from __future__ import annotations

import shutil
import socket
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from palm import TimeoutError
from palm.call.parallel import ParallelClient
from palm.call.request import Client
from palm.errors import StateError
from palm.wire.discovery import CacheClient
from palm.wire.security import Keys, Security, generate
from tests.fixtures.procs import PALM, Processes, wait_for

WORKER = "tests.apps.services:EchoWorker"
FAST = ("--heartbeat-interval-s", "0.2")


@pytest.fixture
def keys(tmp_path: Path) -> Path:
    return generate(tmp_path / "keys")


def rogue_keys(tmp_path: Path, good: Path) -> Path:
    """Keys of another cluster that know the real server's public key (so the
    handshake gets as far as the allow-list check)."""
    rogue = generate(tmp_path / "rogue")
    shutil.copyfile(good / "server.key", rogue / "server.key")
    return rogue


def client_key_as_worker(tmp_path: Path, good: Path) -> Path:
    """A directory whose worker pair is the cluster's client pair."""
    stolen = tmp_path / "stolen"
    stolen.mkdir()
    shutil.copyfile(good / "server.key", stolen / "server.key")
    for role in ("worker", "client"):
        shutil.copyfile(good / "client.key", stolen / f"{role}.key")
        shutil.copyfile(good / "client.key_secret", stolen / f"{role}.key_secret")
    return stolen


def info_of(ready: dict[str, Any], keys: Path | bool, role: str = "client") -> dict[str, Any]:
    sec: Security | bool = Security(Keys(keys), role) if isinstance(keys, Path) else keys
    with Client(ready["db"], ready["name"], timeout_s=5, keys=sec) as probe:
        return probe.info()


def start_worker(
    procs: Processes, name: str, ready: dict[str, Any], keys: Path | None
) -> subprocess.Popen[str]:
    proc = procs.start(
        [
            *PALM[:1],
            "-m",
            "palm.ops.worker_process",
            WORKER,
            name,
            "--push",
            ready["worker_push"],
            "--pull",
            ready["worker_pull"],
            "--log-level",
            "WARNING",
            *FAST,
        ],
        env={"PALM_KEYS": str(keys) if keys else ""},
        stdout=subprocess.DEVNULL,
    )
    return proc


@pytest.mark.timeout(120)
def test_only_keyed_workers_register_and_get_jobs(
    procs: Processes, keys: Path, tmp_path: Path
) -> None:
    _, ready = procs.master("master", *FAST, "--keys", str(keys))
    start_worker(procs, "nokey", ready, None)
    start_worker(procs, "wrongkey", ready, rogue_keys(tmp_path, keys))
    start_worker(procs, "clientkey", ready, client_key_as_worker(tmp_path, keys))
    # the two keyed impostors reach the allow-list check and are refused there
    wait_for(lambda: info_of(ready, keys)["stats"]["refused"] >= 2, timeout_s=30)
    start_worker(procs, "good", ready, keys)
    wait_for(lambda: info_of(ready, keys)["workers"], timeout_s=30)

    with ParallelClient(
        ready["push"], ready["pull"], ready["db"], "master", keys=str(keys), timeout_s=30
    ) as client:
        results = list(client.job("foo", [b"job%d" % i for i in range(40)]))
    assert len(results) == 40
    assert all(r.startswith(b"good processed job") for r in results), set(results)
    info = info_of(ready, keys)
    assert [w["name"] for w in info["workers"]] == ["good"]
    assert info["stats"]["jobs_out"] == 40
    assert info["stats"]["refused"] >= 2


@pytest.mark.timeout(120)
def test_unauthenticated_clients_cannot_submit_or_read_the_cache(
    procs: Processes, keys: Path, tmp_path: Path
) -> None:
    _, ready = procs.master("master", *FAST, "--keys", str(keys))
    start_worker(procs, "good", ready, keys)
    wait_for(lambda: info_of(ready, keys)["workers"], timeout_s=30)
    good = CacheClient(ready["db"], keys=str(keys), timeout_s=5)
    key = good.set(b"the secret value")

    rogue = Keys(rogue_keys(tmp_path, keys))
    outsiders: list[Security | bool] = [
        False,  # no key at all
        Security(rogue, "client"),  # a key nobody allowed
        Security(Keys(keys), "worker"),  # a worker key cannot submit jobs
    ]
    for who in outsiders:
        with (
            ParallelClient(
                ready["push"], ready["pull"], ready["db"], "master", keys=who, timeout_s=2
            ) as client,
            pytest.raises(TimeoutError),
        ):
            list(client.job("foo", [b"sneaky"]))
    for who in outsiders[:2]:
        reader = CacheClient(ready["db"], keys=who, timeout_s=2)
        with pytest.raises(StateError):
            reader.get(key)
        reader.close()

    info = info_of(ready, keys)
    assert info["stats"]["jobs_in"] == 0  # none of their jobs reached the master
    assert info["workers"][0]["done"] == 0
    assert info["stats"]["refused"] >= 2
    assert good.get(key) == b"the secret value"
    good.close()
    # INFO to a client leaves pids and host names out; a worker (of the cluster) sees them
    assert info["pid"] == 0 and info["host"] == ""
    assert all("pid" not in w and "host" not in w for w in info["workers"])
    full = info_of(ready, keys, role="worker")
    assert full["pid"] > 0 and full["host"]
    assert full["workers"][0]["pid"] > 0


class Relay:
    """A TCP relay on 127.0.0.1 to ``target`` that records every byte it passes."""

    def __init__(self, target: str) -> None:
        host, port = target[len("tcp://") :].rsplit(":", 1)
        self.target = (host, int(port))
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.address = f"tcp://127.0.0.1:{self.listener.getsockname()[1]}"
        self.captured = bytearray()
        self.lock = threading.Lock()
        self.socks: list[socket.socket] = [self.listener]
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.listener.accept()
            except OSError:
                return
            upstream = socket.create_connection(self.target)
            self.socks += [conn, upstream]
            threading.Thread(target=self._pipe, args=(conn, upstream), daemon=True).start()
            threading.Thread(target=self._pipe, args=(upstream, conn), daemon=True).start()

    def _pipe(self, src: socket.socket, dst: socket.socket) -> None:
        while True:
            try:
                data = src.recv(65536)
                if not data:
                    return
                with self.lock:
                    self.captured += data
                dst.sendall(data)
            except OSError:
                return

    def close(self) -> None:
        for sock in self.socks:
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            sock.close()


@pytest.fixture
def relays() -> Iterator[list[Relay]]:
    made: list[Relay] = []
    yield made
    for relay in made:
        relay.close()


@pytest.mark.timeout(120)
@pytest.mark.parametrize("curve", [True, False], ids=["keys", "plain"])
def test_payloads_never_cross_the_wire_in_clear_with_keys(
    procs: Processes, keys: Path, relays: list[Relay], curve: bool
) -> None:
    extra = ("--keys", str(keys)) if curve else ()
    env = None if curve else {"PALM_KEYS": ""}
    _, ready = procs.palm(
        "master",
        "--name",
        "master",
        *(f"--{k}=tcp://127.0.0.1:*" for k in ("pull", "push", "worker-pull", "worker-push")),
        "--db=tcp://127.0.0.1:*",
        *FAST,
        *extra,
        env=env,
    )
    start_worker(procs, "good", ready, keys if curve else None)
    key_option: str | bool = str(keys) if curve else False
    wait_for(lambda: info_of(ready, keys if curve else False)["workers"], timeout_s=30)
    relay = Relay(ready["pull"])
    relays.append(relay)
    marker = b"PLAINTEXT-MARKER-7f3a9c"
    with ParallelClient(
        ready["push"], relay.address, ready["db"], "master", keys=key_option, timeout_s=30
    ) as client:
        results = list(client.job("echo", [marker + b"%d" % i for i in range(5)]))
    assert results == [marker + b"%d" % i for i in range(5)]
    with relay.lock:
        captured = bytes(relay.captured)
    assert len(captured) > 5 * len(marker)  # the jobs went through the relay
    assert (marker in captured) is not curve


@pytest.mark.timeout(120)
def test_the_rogue_worker_attack_is_refused_at_the_handshake_with_keys(
    procs: Processes, keys: Path, tmp_path: Path
) -> None:
    # the attack of tests/integration/test_shipping_auth.py (a rogue worker that
    # answers map chunks with a pickle that runs code), against a keyed cluster
    marker = tmp_path / "pwned"
    _, ready = procs.master("master", *FAST, "--keys", str(keys))
    rogue = procs.start(
        [
            *PALM[:1],
            "-m",
            "tests.apps.rogue_worker",
            ready["worker_push"],
            ready["worker_pull"],
            str(marker),
        ]
    )
    start_worker(procs, "good", ready, keys)
    wait_for(lambda: [w["name"] for w in info_of(ready, keys)["workers"]] == ["good"])
    with ParallelClient(
        ready["push"], ready["pull"], ready["db"], "master", keys=str(keys), timeout_s=30
    ) as client:
        results = list(client.job("foo", [b"job%d" % i for i in range(40)]))
    assert all(r.startswith(b"good processed job") for r in results) and len(results) == 40
    assert rogue.poll() is None  # the rogue is running, and got nothing
    assert not Path(f"{marker}.count").exists() and not marker.exists()
    assert [w["name"] for w in info_of(ready, keys)["workers"]] == ["good"]
