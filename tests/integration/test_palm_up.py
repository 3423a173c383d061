"""``palm up`` and ``palm masters``: the deployment file run for real (Redis,
masters, worker pools, gunicorn, Envoy), called through Envoy, stopped by
signal, every process checked gone by PID."""

from __future__ import annotations

import json
import math
import shlex
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import psutil
import pytest

from palm.call.parallel import ParallelClient
from palm.call.request import Client
from palm.ops.cluster import read_lines
from tests.fixtures.http import request, wait_until
from tests.fixtures.procs import Processes, free_port

pytestmark = pytest.mark.timeout(180)

ROOT = Path(__file__).resolve().parents[2]
PALM = [sys.executable, "-m", "palm", "--log-level", "WARNING"]


def read_until(proc: subprocess.Popen[str], marker: str, timeout_s: float) -> list[str]:
    """Lines of stdout up to and including the first one that contains ``marker``."""
    try:
        return read_lines(proc, lambda line: marker in line, timeout_s)
    except (TimeoutError, RuntimeError) as exc:
        raise AssertionError(f"no {marker!r} in time: {exc}") from exc


def stop_tree(proc: subprocess.Popen[str]) -> None:
    """After a failure: SIGTERM ``palm up`` (it stops what it started), then SIGKILL
    by PID whatever is left of its tree."""
    if proc.poll() is not None:
        return
    try:
        tree = psutil.Process(proc.pid).children(recursive=True)
    except psutil.NoSuchProcess:
        return
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(60)
    except subprocess.TimeoutExpired:
        proc.kill()
    _gone, alive = psutil.wait_procs(tree, timeout=10)
    for child in alive:
        child.kill()
    psutil.wait_procs(alive, timeout=10)


def started_pids(lines: list[str]) -> dict[str, int]:
    (line,) = [line for line in lines if line.strip().startswith("processes: ")]
    pids: dict[str, int] = json.loads(line.split("processes: ", 1)[1])
    return pids


def test_palm_up_once_answers_through_envoy_and_stops_what_it_started(procs: Processes):
    proc = procs.start([*PALM, "up", "--config", "palm.yaml", "--port", "0", "--once"])
    try:
        out, _ = proc.communicate(timeout=150)
    finally:
        stop_tree(proc)
    assert proc.returncode == 0, out
    assert "POST /echo/foo -> 200 you sent me hello" in out
    assert "POST /demo/foo -> 200 demo-" in out and "processed hello" in out
    assert "POST /maths/factorial -> 200 3628800" in out
    assert "POST /map/maths/factorial -> 200 [1,2,6,24]" in out
    assert "POST /chatbox/agent -> 200" in out and "Bill Murray" in out
    assert "POST /jobs/echo/foo -> 200 you sent me hello" in out
    assert "Stop with Ctrl-C" not in out  # --once stops by itself
    pids = started_pids(out.splitlines())
    mastr = {"workers:mastr-value", "workers:mastr-agg-0", "workers:mastr-agg-1"}
    assert set(pids) == {
        "redis",
        "masters",
        "workers:demo",
        "workers:maths",
        "workers:chatbox",
        "gateway",
        "envoy",
        *mastr,
    }
    _gone, alive = psutil.wait_procs(
        [p for p in map(_process, pids.values()) if p is not None], timeout=10
    )
    assert alive == []


def factorial_digits(n: int) -> str:
    """The decimal digits of n!, written without Python's int-to-str limit."""
    number = math.factorial(n)
    digits = []
    while number:
        number, low = divmod(number, 10**100)
        digits.append(f"{low:0100d}")
    return "".join(reversed(digits)).lstrip("0")


def _process(pid: int) -> psutil.Process | None:
    try:
        return psutil.Process(pid)
    except psutil.NoSuchProcess:
        return None


@pytest.mark.skipif(shutil.which("curl") is None, reason="the guide's commands need curl")
def test_palm_up_prints_curl_commands_that_work_and_stops_everything_on_sigterm(
    procs: Processes,
):
    proc = procs.start([*PALM, "up", "--config", "palm.yaml", "--port", "0"])
    try:
        lines = read_until(proc, "Stop with Ctrl-C.", 120)
        url = next(line.split()[-1] for line in lines if line.startswith("palm up: edge at "))
        tree = psutil.Process(proc.pid).children(recursive=True)
        # redis, masters (+3 servers), 2 pools (+4 workers), gunicorn (+2), envoy
        assert len(tree) >= 14, tree
        commands = [line.strip() for line in lines if line.strip().startswith("curl ")]
        answers = {}
        for command in commands:
            if "<job_id>" in command:
                continue
            assert url in command
            done = subprocess.run(shlex.split(command), capture_output=True, timeout=30, check=True)
            answers[command.split()[-1].removeprefix(url)] = done.stdout
        assert answers["/echo/foo"] == b"you sent me hello"
        assert answers["/maths/factorial"] == b"3628800"
        assert json.loads(answers["/map/maths/factorial"]) == [1, 2, 6, 24]
        # edge.auth api_keys (the shipped default): the guide's key, and none is refused
        key = next(line.split()[-1] for line in lines if line.startswith("API key "))
        auth = {"Authorization": f"Bearer {key}"}
        # an int over Python's 4,300-digit int-to-str limit: a string of its digits
        digits = factorial_digits(2000)
        reply = request(url, "POST", "/maths/factorial", body=b"2000", headers=auth)
        assert (reply.status, reply.json()) == (200, digits)
        reply = request(url, "POST", "/map/maths/factorial", body=b"[2000, 4]", headers=auth)
        assert (reply.status, reply.json()) == (200, [digits, 24])
        reply = request(url, "POST", "/map/maths/factorial", body=b"[" * 50_000, headers=auth)
        assert reply.status == 400 and reply.json()["error"] == "malformed body"
        assert request(url, "POST", "/maths/factorial", body=b"5", headers=auth).body == b"120"
        job_id = json.loads(answers["/jobs/echo/foo"])["job_id"]
        wait_until(
            lambda: request(url, "GET", f"/jobs/{job_id}/result", headers=auth).status == 200,
            30,
            "job done",
        )
        assert request(url, "GET", f"/jobs/{job_id}/result").status == 401

        proc.send_signal(signal.SIGTERM)
        assert proc.wait(60) == 0
        _gone, alive = psutil.wait_procs(tree, timeout=10)
        assert alive == []

    finally:
        stop_tree(proc)


DEPLOYMENT = """
name: masters-test
services:
  echo:
    kind: standalone
    server: tests.apps.services:EchoServer
  work:
    kind: parallel
    worker: tests.apps.services:EchoWorker
"""


def test_palm_masters_serves_a_deployment_and_restarts_a_master_that_dies(
    procs: Processes, tmp_path: Path
):
    config = tmp_path / "palm.yaml"
    config.write_text(textwrap.dedent(DEPLOYMENT))
    masters, ready = procs.palm("masters", "--config", str(config), "--any-port")
    try:
        services = ready["services"]
        assert set(services) == {"echo", "work"}
        with Client(services["echo"]["addresses"]["address"], "echo", timeout_s=10) as client:
            assert client.job("foo", b"x") == b"you sent me x"

        work = services["work"]["addresses"]
        pool = procs.start(
            [*PALM, "worker", "tests.apps.services:EchoWorker", "--connect", work["db"]],
            stdout=subprocess.DEVNULL,
        )
        client = ParallelClient(work["push"], work["pull"], work["db"], "work", timeout_s=20)
        try:
            assert list(client.job("tag", [b"a", b"b"], messages=2, ordered=True)) == [
                b"ok:a",
                b"ok:b",
            ]
            old = psutil.Process(services["work"]["pid"])
            old.kill()
            old.wait(10)
            # the service starts the master again on the same endpoints; the worker
            # registers again and the same client gets answers
            assert list(client.job("tag", [b"c"], messages=1)) == [b"ok:c"]
        finally:
            client.close()
            stop_tree(pool)

        children = psutil.Process(masters.pid).children(recursive=True)
        assert len(children) == 2
        masters.send_signal(signal.SIGTERM)
        assert masters.wait(30) == 0
        _gone, alive = psutil.wait_procs(children, timeout=10)
        assert alive == []
    finally:
        stop_tree(masters)


def test_a_second_palm_up_on_a_busy_port_refuses_naming_it_and_the_first_serves_on(
    procs: Processes,
):
    port = free_port()
    first = procs.start([*PALM, "up", "--config", "palm.yaml", "--port", str(port)])
    try:
        lines = read_until(first, "Stop with Ctrl-C.", 120)
        url = next(line.split()[-1] for line in lines if line.startswith("palm up: edge at "))
        key = next(line.split()[-1] for line in lines if line.startswith("API key "))
        second = procs.start(
            [*PALM, "up", "--config", "palm.yaml", "--port", str(port)],
            stderr=subprocess.STDOUT,
        )
        asked = time.monotonic()
        out, _ = second.communicate(timeout=60)
        assert second.returncode != 0, out
        assert time.monotonic() - asked < 30, "the second palm up took long to refuse"
        assert "edge at" not in out and "processes:" not in out  # it started nothing
        assert f"port {port}" in out and f"pid {first.pid}" not in out  # Envoy holds it
        assert "envoy" in out.lower(), out
        auth = {"Authorization": f"Bearer {key}"}
        for i in range(10):  # every request reaches the first deployment
            reply = request(url, "POST", "/echo/foo", body=b"%d" % i, headers=auth)
            assert (reply.status, reply.body) == (200, b"you sent me %d" % i)
    finally:
        stop_tree(first)
