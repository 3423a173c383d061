"""Right after ``palm up``: ``palm logs``, ``palm stats`` and ``palm dashboard``
with no flags find the deployment (through the registry of running
deployments), the stats name the
function service's function and count its failures; the entry goes on stop."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from palm.ops.cluster import read_lines
from tests.fixtures.http import request
from tests.fixtures.procs import Processes

pytestmark = pytest.mark.timeout(180)

PALM = [sys.executable, "-m", "palm", "--log-level", "WARNING"]

DEPLOYMENT = """\
name: observed
edge: {port: 0, auth: open}
services:
  echo: {kind: standalone, server: "palm.demo:DemoServer"}
  maths: {kind: function, functions: {factorial: "palm.demo:factorial"}, workers: 1}
"""


def palm(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    """A ``palm`` command as a user types it: no flags, no Redis in the environment."""
    return subprocess.run(
        [*PALM, *args], cwd=cwd, capture_output=True, text=True, timeout=60, check=False
    )


def test_palm_logs_and_stats_find_the_deployment_with_no_flags(
    procs: Processes, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("PALM_REDIS_URL", raising=False)
    monkeypatch.delenv("PALM_CLUSTER", raising=False)
    monkeypatch.setenv("PALM_DATA_DIR", str(tmp_path / "data"))
    (tmp_path / "palm.yaml").write_text(DEPLOYMENT)
    up = procs.start([*PALM, "up"], cwd=tmp_path)
    lines = read_lines(up, lambda line: line.startswith("Logs: "), 120)
    url = next(line.split()[-1] for line in lines if line.startswith("palm up: edge at "))
    hint = next(line for line in lines if line.startswith("Logs: "))
    assert hint.split() == ["Logs:", "palm", "logs", "Counters:", "palm", "stats"], hint

    assert request(url, "POST", "/maths/factorial", body=b"5").body == b"120"
    failed = request(url, "POST", "/maths/factorial", body=b"-1")
    assert failed.status >= 400, failed

    deadline = time.monotonic() + 30
    while True:  # the counters are published every second
        stats = palm("stats", cwd=tmp_path)
        assert stats.returncode == 0, stats.stderr
        rows = [line.split() for line in stats.stdout.splitlines()]
        factorial = [row for row in rows if len(row) > 4 and row[1] == "factorial"]
        if (factorial and int(factorial[0][4]) >= 1) or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    assert factorial, stats.stdout
    server, _fn, _calls_in, out, failed_count = factorial[0][:5]
    assert server == "maths" and int(failed_count) == 1 and int(out) >= 1, stats.stdout
    assert "__map__" not in stats.stdout
    assert any(row[:2] == ["echo", "-"] or row[0] == "echo" for row in rows), stats.stdout

    logs = palm("logs", cwd=tmp_path)
    assert logs.returncode == 0, logs.stderr
    assert logs.stdout.strip(), "no log records"

    # palm dashboard finds it too: its snapshot lists the function service
    board = procs.start([*PALM, "dashboard", "--port", "0"], cwd=tmp_path)
    first = read_lines(board, lambda line: "/dashboard" in line, 60)[-1]
    assert first.startswith("palm dashboard of 'observed': http://127.0.0.1:"), first
    base = first.split()[-1].removesuffix("/dashboard")
    snapshot = request(base, "GET", "/dashboard/api/snapshot")
    assert snapshot.status == 200 and b'"maths"' in snapshot.body, snapshot
    board.send_signal(signal.SIGTERM)
    assert board.wait(30) == 0

    up.send_signal(signal.SIGTERM)
    up.communicate(timeout=60)
    assert not list((tmp_path / "data" / "running").glob("*.json"))
    gone = palm("stats", cwd=tmp_path)
    assert gone.returncode == 1 and "no live embedded Redis" in gone.stderr, gone.stderr
