"""Two hosts on one machine: a master in one network namespace, a worker pool and
a client in another, joined by a veth pair; everything crosses real TCP.

The master binds ``tcp://0.0.0.0:*``; the workers learn its endpoints from the
db endpoint, which rewrites the wildcard host to the master's address. Needs
root and ``ip`` (iproute2); the namespaces and the veth pair are made with a
random suffix and removed in teardown, processes are killed by PID.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from dataclasses import dataclass

import psutil
import pytest

from tests.fixtures.procs import Processes, ready

pytestmark = pytest.mark.timeout(120)

# A private /30 used only inside the two namespaces.
MASTER_IP = "10.254.99.1"
WORKER_IP = "10.254.99.2"
PREFIX = 30


@dataclass(frozen=True)
class Hosts:
    master_ns: str
    worker_ns: str

    def run_in(self, ns: str, cmd: list[str]) -> list[str]:
        return ["ip", "netns", "exec", ns, *cmd]


def _ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True, timeout=20)


@pytest.fixture
def hosts() -> Iterator[Hosts]:
    if shutil.which("ip") is None:
        pytest.skip("needs ip (iproute2)")
    if os.geteuid() != 0:
        pytest.skip("needs root to make network namespaces")
    suffix = secrets.token_hex(3)
    master_ns, worker_ns = f"palm-m-{suffix}", f"palm-w-{suffix}"
    veth_m, veth_w = f"pm{suffix}", f"pw{suffix}"
    made: list[str] = []
    try:
        try:
            _ip("netns", "add", master_ns)
        except subprocess.CalledProcessError as exc:
            pytest.skip(f"cannot make network namespaces here: {exc.stderr!r}")
        made.append(master_ns)
        _ip("netns", "add", worker_ns)
        made.append(worker_ns)
        _ip("link", "add", veth_m, "type", "veth", "peer", "name", veth_w)
        for ns, veth, address in ((master_ns, veth_m, MASTER_IP), (worker_ns, veth_w, WORKER_IP)):
            _ip("link", "set", veth, "netns", ns)
            _ip("-n", ns, "addr", "add", f"{address}/{PREFIX}", "dev", veth)
            _ip("-n", ns, "link", "set", veth, "up")
            _ip("-n", ns, "link", "set", "lo", "up")
        yield Hosts(master_ns, worker_ns)
    finally:
        # deleting a namespace deletes the veth end inside it, and so the pair
        for ns in made:
            subprocess.run(["ip", "netns", "del", ns], capture_output=True, timeout=20)
        subprocess.run(["ip", "link", "del", veth_m], capture_output=True, timeout=20)


CLIENT = """
import json, sys
from palm.call.parallel import ParallelClient

push, pull, db = sys.argv[1:4]
client = ParallelClient(push, pull, db, "netmaster", timeout_s=30)
messages = [b"m%d" % i for i in range(20)]
results = list(client.job("foo", messages, messages=len(messages), ordered=True))
client.close()
print(json.dumps([r.decode() for r in results]), flush=True)
"""


def test_workers_in_another_namespace_serve_a_master_over_tcp(hosts: Hosts, procs: Processes):
    anywhere = "tcp://0.0.0.0:*"
    master_cmd = [sys.executable, "-m", "palm", "--log-level", "WARNING", "master"]
    master_cmd += ["--name", "netmaster", "--pull", anywhere, "--push", anywhere]
    master_cmd += ["--worker-pull", anywhere, "--worker-push", anywhere, "--db", anywhere]
    master = procs.start(hosts.run_in(hosts.master_ns, master_cmd))
    bound = ready(master)
    port = {label: bound[label].rsplit(":", 1)[1] for label in ("pull", "push", "db")}
    assert bound["db"].startswith("tcp://0.0.0.0:")

    def remote(label: str) -> str:
        return f"tcp://{MASTER_IP}:{port[label]}"

    pool_cmd = [sys.executable, "-m", "palm", "--log-level", "WARNING", "worker"]
    pool_cmd += ["tests.apps.services:EchoWorker", "--connect", remote("db")]
    pool_cmd += ["--processes", "2", "--name", "far"]
    pool = procs.start(hosts.run_in(hosts.worker_ns, pool_cmd), stdout=subprocess.DEVNULL)

    try:
        client_cmd = [sys.executable, "-c", textwrap.dedent(CLIENT)]
        client_cmd += [remote("push"), remote("pull"), remote("db")]
        client = procs.start(hosts.run_in(hosts.worker_ns, client_cmd))
        out, _ = client.communicate(timeout=60)
        assert client.returncode == 0
        results = json.loads(out)
        assert len(results) == 20
        for i, result in enumerate(results):
            worker, _, message = result.partition(" processed ")
            assert message == f"m{i}"
            assert worker in {"far-0", "far-1"}

        # stop the pool by PID and check its worker processes went with it
        workers = psutil.Process(pool.pid).children(recursive=True)
        assert len(workers) == 2
        pool.send_signal(signal.SIGTERM)
        assert pool.wait(30) == 0
        _gone, alive = psutil.wait_procs(workers, timeout=10)
        assert alive == []
    finally:
        kill_tree(pool.pid)


def kill_tree(pid: int) -> None:
    """SIGKILL the descendants of ``pid`` by PID (the fixture then kills ``pid``)."""
    try:
        children = psutil.Process(pid).children(recursive=True)
    except psutil.NoSuchProcess:
        return
    for child in children:
        with contextlib.suppress(psutil.NoSuchProcess):
            child.kill()
    psutil.wait_procs(children, timeout=10)
