"""Every process palm starts dies with its parent, and ``palm up`` stops fast.

Real processes throughout: ``palm up`` with the repository's palm.yaml,
``palm masters``, ``palm worker``, gunicorn and a script running a
:class:`~palm.ops.cluster.LocalCluster`. Each test collects the whole process
tree with psutil before killing its root with SIGKILL, then checks every PID.
"""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import sys
import tempfile
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

from palm.gateway.serve import GatewayServer
from palm.gateway.up import Up
from palm.ops.cluster import read_lines
from palm.ops.config import load_deployment
from tests.fixtures.procs import Processes, wait_for

pytestmark = pytest.mark.timeout(240)

ROOT = Path(__file__).resolve().parents[2]
PALM = [sys.executable, "-m", "palm", "--log-level", "WARNING"]
#: how long descendants have to vanish once their root is gone (the supervisors get
#: SIGTERM and stop their own children first: on a busy 2-core machine that took over 5 s)
GONE_WITHIN_S = 20.0


@pytest.fixture
def leftovers() -> Iterator[list[psutil.Process]]:
    """Processes a test saw; any still alive at teardown is SIGKILLed."""
    seen: list[psutil.Process] = []
    yield seen
    for proc in seen:
        try:
            proc.kill()
        except psutil.Error:
            pass
    psutil.wait_procs(seen, timeout=10)


def tree(pid: int, into: list[psutil.Process]) -> list[psutil.Process]:
    """Every descendant of ``pid`` (recorded in ``into`` for teardown)."""
    found: list[psutil.Process] = psutil.Process(pid).children(recursive=True)
    into.extend(found)
    return found


def running(proc: psutil.Process) -> bool:
    """Still running: an exited process waiting for init to reap it (a zombie) is not."""
    try:
        return proc.is_running() and proc.status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


def still_running(procs: list[psutil.Process], timeout_s: float = GONE_WITHIN_S) -> list[str]:
    """The processes still running once all have exited, or after ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while True:
        left = [p for p in procs if running(p)]
        if not left or time.monotonic() > deadline:
            return [f"{p.pid} {' '.join(_cmdline(p))}" for p in left]
        time.sleep(0.05)


def alive_after_kill(root: subprocess.Popen[str], descendants: list[psutil.Process]) -> list[str]:
    """SIGKILL ``root``; the descendants still running ``GONE_WITHIN_S`` later."""
    root.kill()
    root.wait(10)
    return still_running(descendants)


def _cmdline(proc: psutil.Process) -> list[str]:
    try:
        return proc.cmdline()[:6]
    except psutil.Error:
        return []


def start_up(
    procs: Processes, *extra: str, env: dict[str, str] | None = None
) -> tuple[subprocess.Popen[str], Path]:
    """``palm up`` of palm.yaml on an OS-chosen port, once it says it is ready."""
    proc = procs.start([*PALM, "up", "--config", "palm.yaml", "--port", "0", *extra], env=env)
    try:
        lines = read_lines(proc, lambda line: "Stop with Ctrl-C." in line, 150)
    except (TimeoutError, RuntimeError) as exc:
        raise AssertionError(f"palm up did not start: {exc}") from exc
    (workdir,) = [
        line.split("work directory: ", 1)[1].strip() for line in lines if "work directory: " in line
    ]
    return proc, Path(workdir)


def test_palm_up_killed_leaves_no_process_and_the_next_up_removes_its_workdir(
    procs: Processes,
    leftovers: list[psutil.Process],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
):
    # a temporary directory of its own: another palm up on this machine would
    # rightly remove the dead stack's work directory too
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    proc, workdir = start_up(procs, env={"TMPDIR": str(tmp_path)})
    assert workdir.parent == tmp_path
    descendants = tree(proc.pid, leftovers)
    # redis, masters (+6), 5 pools (+6 workers), gunicorn (+2), envoy
    assert len(descendants) >= 20, descendants
    assert workdir.is_dir()

    assert alive_after_kill(proc, descendants) == []

    assert workdir.is_dir()  # nobody cleaned up after the SIGKILL...
    up = Up(load_deployment(ROOT / "palm.yaml"))  # ...the next palm up does
    try:
        assert not workdir.exists()
        assert up.workdir.is_dir()
    finally:
        up.stop()
    assert not up.workdir.exists()


def test_palm_up_stops_in_under_3_s_on_sigterm_and_removes_its_workdir(
    procs: Processes, leftovers: list[psutil.Process]
):
    proc, workdir = start_up(procs)
    descendants = tree(proc.pid, leftovers)
    assert len(descendants) >= 20, descendants

    signalled = time.monotonic()
    proc.send_signal(signal.SIGTERM)
    code = proc.wait(30)
    took_s = time.monotonic() - signalled

    assert code == 0
    assert took_s < 3.0, f"palm up took {took_s:.2f} s to stop"
    assert not workdir.exists()
    assert still_running(descendants) == []


def test_palm_up_keeps_its_workdir_when_asked(procs: Processes, leftovers: list[psutil.Process]):
    proc, workdir = start_up(procs, "--keep-workdir")
    tree(proc.pid, leftovers)
    proc.send_signal(signal.SIGTERM)
    out, _ = proc.communicate(timeout=30)
    assert proc.returncode == 0
    try:
        assert workdir.is_dir()
        assert f"work directory kept at {workdir}" in out
        assert (workdir / "redis").is_dir()
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


DEPLOYMENT = """
name: lifetime-test
services:
  echo:
    kind: standalone
    server: tests.apps.services:EchoServer
  work:
    kind: parallel
    worker: tests.apps.services:EchoWorker
"""


def test_palm_masters_killed_takes_its_masters_with_it(
    procs: Processes, leftovers: list[psutil.Process], tmp_path: Path
):
    config = tmp_path / "palm.yaml"
    config.write_text(textwrap.dedent(DEPLOYMENT))
    masters, _ready = procs.palm("masters", "--config", str(config), "--any-port")
    descendants = tree(masters.pid, leftovers)
    assert len(descendants) == 2, descendants

    assert alive_after_kill(masters, descendants) == []


def test_palm_worker_killed_takes_its_workers_with_it(
    procs: Processes, leftovers: list[psutil.Process]
):
    master, ready = procs.master("lifetime")
    leftovers.append(psutil.Process(master.pid))
    spec = "tests.apps.services:EchoWorker"
    pool = procs.start(
        [*PALM, "worker", spec, "--connect", ready["db"], "--processes", "3"],
        stdout=subprocess.DEVNULL,
    )
    wait_for(lambda: len(psutil.Process(pool.pid).children()) == 3, 30)
    descendants = tree(pool.pid, leftovers)

    assert alive_after_kill(pool, descendants) == []


def test_gunicorn_killed_takes_its_workers_with_it(leftovers: list[psutil.Process]):
    server = GatewayServer({"services": {}, "auth": "open"}, workers=2)
    server.start()
    try:
        wait_for(lambda: len(psutil.Process(server.pid).children()) == 2, 30)
        workers = tree(server.pid, leftovers)
        master = psutil.Process(server.pid)
        master.kill()
        assert server.process is not None
        server.process.wait(10)
        assert still_running(workers) == []
    finally:
        server.close()


CLUSTER_SCRIPT = """
import json, sys, threading, time
from palm.ops.cluster import LocalCluster

cluster = LocalCluster(workers=2)
# started on a thread that then ends: the children must outlive that thread
starter = threading.Thread(target=cluster.start)
starter.start()
starter.join()
cluster.wait_for_workers(2, timeout_s=30)
squares = cluster.map(abs, [-1, -2, -3])
pids = [cluster.master.pid, *(w.pid for w in cluster.workers)]
print(json.dumps({"squares": squares, "pids": pids}), flush=True)
time.sleep(600)
"""


def test_local_cluster_dies_with_its_process_even_when_started_on_a_thread(
    procs: Processes, leftovers: list[psutil.Process]
):
    script = procs.start([sys.executable, "-c", CLUSTER_SCRIPT])
    try:
        (line,) = read_lines(script, lambda line: line.startswith("{"), 90)
    except (TimeoutError, RuntimeError) as exc:
        raise AssertionError(f"the cluster did not start: {exc}") from exc
    report = json.loads(line)
    assert report["squares"] == [1, 2, 3]  # its workers lived on after the thread ended
    descendants = tree(script.pid, leftovers)
    assert {p.pid for p in descendants} >= set(report["pids"])

    assert alive_after_kill(script, descendants) == []


REDIS_CLUSTER_SCRIPT = """
import json, os, sys, time
from pathlib import Path
from palm.ops.cluster import LocalCluster

info = Path(os.environ["PALM_DATA_DIR"]) / "redis.json"
cluster = LocalCluster(workers=1).start()
cluster.wait_for_workers(1, timeout_s=30)
assert cluster.map(abs, [-4]) == [4]
deadline = time.monotonic() + 30
while not info.exists() and time.monotonic() < deadline:
    time.sleep(0.05)  # the master starts its Redis in the background
print(json.dumps({"redis": json.loads(info.read_text())["pid"]}), flush=True)
if sys.argv[1] == "stop":
    cluster.stop()
    print("stopped", flush=True)
time.sleep(600)
"""


def _cluster_redis(procs: Processes, tmp_path: Path, how: str) -> tuple[subprocess.Popen[str], int]:
    """A script's LocalCluster with its embedded Redis; the script and Redis's PID."""
    env = {"PALM_DATA_DIR": str(tmp_path / "data"), "PALM_NO_REDIS": "", "PALM_REDIS_URL": ""}
    script = procs.start([sys.executable, "-c", REDIS_CLUSTER_SCRIPT, how], env=env)
    try:
        (line,) = read_lines(script, lambda line: line.startswith("{"), 90)
    except (TimeoutError, RuntimeError) as exc:
        raise AssertionError(f"the cluster did not start its Redis: {exc}") from exc
    pid = json.loads(line)["redis"]
    assert "redis-server" in " ".join(psutil.Process(pid).cmdline())
    return script, pid


def test_a_local_clusters_embedded_redis_stops_with_it(
    procs: Processes, leftovers: list[psutil.Process], short_tmp_dir: Path
):
    script, pid = _cluster_redis(procs, short_tmp_dir, "stop")
    redis = psutil.Process(pid)
    leftovers.append(redis)
    read_lines(script, lambda line: "stopped" in line, 60)
    assert wait_for(lambda: not running(redis) or None, timeout_s=GONE_WITHIN_S)


def test_a_local_clusters_embedded_redis_dies_with_its_killed_process(
    procs: Processes, leftovers: list[psutil.Process], short_tmp_dir: Path
):
    script, pid = _cluster_redis(procs, short_tmp_dir, "kill")
    redis = psutil.Process(pid)
    descendants = tree(script.pid, leftovers)
    assert redis in descendants
    assert alive_after_kill(script, descendants) == []
