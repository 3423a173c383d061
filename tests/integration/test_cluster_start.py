"""LocalCluster starts its master and workers by forking this process, or as new interpreters.

Real processes throughout; each test stops the cluster and then checks that
every process it started is gone (SIGKILL for any left, so nothing leaks).
"""

from __future__ import annotations

import os
import signal
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

from palm.errors import ConfigError
from palm.ops.cluster import LocalCluster
from palm.ops.forking import ForkedProcess
from tests.fixtures.procs import alive


@pytest.fixture
def started() -> Iterator[list[int]]:
    """PIDs a test started: SIGKILLed at the end if still there."""
    pids: list[int] = []
    yield pids
    for pid in pids:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def cmdline(pid: int) -> list[str]:
    return psutil.Process(pid).cmdline()


def test_a_forked_cluster_runs_no_new_interpreter_and_maps(started: list[int]) -> None:
    cluster = LocalCluster(workers=2, start="fork")
    with cluster:
        assert cluster.master is not None
        procs = [cluster.master, *cluster.workers]
        started += [p.pid for p in procs]
        assert all(isinstance(p, ForkedProcess) for p in procs)
        here = cmdline(os.getpid())
        for proc in procs:  # forked from this process: its command line, not `python -m`
            assert proc.pid != os.getpid()
            assert psutil.Process(proc.pid).ppid() == os.getpid()
            assert cmdline(proc.pid) == here
        cluster.wait_for_workers(2, timeout_s=60)
        assert cluster.map(abs, range(-50, 0)) == list(range(50, 0, -1))
        # a worker killed and one added: still a real process of its own
        os.kill(cluster.workers[0].pid, signal.SIGKILL)
        assert cluster.workers[0].wait(30) == -signal.SIGKILL
        started.append(cluster.add_worker().pid)
        assert cluster.map(abs, [-7] * 10, timeout_s=60) == [7] * 10
        graceful = [cluster.master, cluster.workers[1]]  # serving for a while by now
    # SIGTERM on stop: each left as a palm process does, on its own handler (a
    # fork that kept its parent's handlers, or none, would not exit 0)
    assert [p.returncode for p in graceful] == [0] * len(graceful)
    for pid in started:
        assert not alive(pid)


def test_an_exec_cluster_runs_new_interpreters(started: list[int]) -> None:
    with LocalCluster(workers=1, start="exec") as cluster:
        assert cluster.master is not None
        started += [cluster.master.pid, cluster.workers[0].pid]
        assert not isinstance(cluster.workers[0], ForkedProcess)
        assert "palm.ops.worker_process" in cmdline(cluster.workers[0].pid)
        cluster.wait_for_workers(1, timeout_s=60)
        assert cluster.map(abs, [-1, -2]) == [1, 2]


def test_an_unknown_start_method_is_refused() -> None:
    with pytest.raises(ConfigError, match="fork"):
        LocalCluster(start="spawn")


def test_a_cluster_removes_the_directory_a_sigkilled_cluster_left(
    started: list[int], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import subprocess
    import sys
    import tempfile

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    # a cluster's script, SIGKILLed: its directory stays, owned by a dead process
    script = (
        "import os, signal; from palm.ops.cluster import LocalCluster\n"
        "c = LocalCluster(workers=1).start()\n"
        "print(c._ipc_dir, flush=True); os.kill(os.getpid(), signal.SIGKILL)\n"
    )
    env = {**os.environ, "TMPDIR": str(tmp_path)}
    done = subprocess.run(
        [sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=120
    )
    left = Path(done.stdout.strip())
    assert done.returncode == -signal.SIGKILL and left.parent == tmp_path and left.is_dir()

    with LocalCluster(workers=1) as cluster:
        started.extend(p.pid for p in [cluster.master, *cluster.workers] if p is not None)
        assert not left.exists()
        ours = cluster._ipc_dir
        assert ours is not None and Path(ours).is_dir()
    assert not Path(ours).exists()
