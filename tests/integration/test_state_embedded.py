"""The embedded redis-server: start, persistence, reuse across processes, no orphans."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

from palm.state.embedded import EmbeddedRedis, ensure_redis, find_live_redis, stop_started_redis
from palm.state.store import State

pytestmark = pytest.mark.timeout(60)


def gone(pid: int) -> bool:
    """True when no process, or only a zombie, has this pid."""
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def wait_gone(pid: int, timeout_s: float = 15.0) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if gone(pid):
            return True
        time.sleep(0.02)
    return False


def kill_if_alive(pid: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)


def test_start_answers_ping_and_stop_leaves_no_process(short_tmp_dir: Path) -> None:
    server = EmbeddedRedis(short_tmp_dir / "d")
    server.start()
    pid = server.pid
    assert pid is not None
    try:
        assert server.url.startswith("unix://")
        assert State(server.url).ping()
    finally:
        server.stop()
    assert gone(pid)
    assert not server.running


def test_tcp_mode_listens_on_a_free_loopback_port(short_tmp_dir: Path) -> None:
    with EmbeddedRedis(short_tmp_dir / "d", unix_socket=False) as server:
        assert server.url.startswith("redis://127.0.0.1:")
        assert server.url != "redis://127.0.0.1:0/0"
        state = State(server.url)
        state.set(b"v", "k")
        assert state.get("k") == b"v"
        pid = server.pid
    assert pid is not None and gone(pid)


def test_data_written_before_stop_is_there_after_a_new_start(short_tmp_dir: Path) -> None:
    with EmbeddedRedis(short_tmp_dir / "d") as server:
        State(server.url).set(b"kept", "k")
    assert (short_tmp_dir / "d" / "appendonly.aof").exists() or any(
        (short_tmp_dir / "d").glob("appendonly*")
    )
    with EmbeddedRedis(short_tmp_dir / "d") as server:
        assert State(server.url).get("k") == b"kept"


def test_ensure_redis_reuses_a_live_server_from_another_process(short_tmp_dir: Path) -> None:
    data_dir = short_tmp_dir / "deploy"
    url = ensure_redis(data_dir)
    pid = json.loads((data_dir / "redis.json").read_text())["pid"]
    try:
        assert ensure_redis(data_dir) == url
        child = (
            "import sys\n"
            "from palm.state.embedded import ensure_redis\n"
            "print(ensure_redis(sys.argv[1]))\n"
        )
        done = subprocess.run(
            [sys.executable, "-c", child, str(data_dir)],
            capture_output=True,
            text=True,
            timeout=30,
            check=True,
        )
        assert done.stdout.strip() == url
        assert json.loads((data_dir / "redis.json").read_text())["pid"] == pid
        assert not gone(pid)  # the child reused it and did not stop it on exit
    finally:
        stop_started_redis(data_dir)
        kill_if_alive(pid)
    assert gone(pid)
    assert find_live_redis(data_dir) is None
    assert not (data_dir / "redis.json").exists()


def test_concurrent_starters_agree_on_one_server(short_tmp_dir: Path) -> None:
    data_dir = short_tmp_dir / "deploy"
    child = (
        "import sys, time\n"
        "from palm.state.embedded import ensure_redis\n"
        "print(ensure_redis(sys.argv[1]), flush=True)\n"
        "sys.stdin.read()\n"  # keep a possible owner alive until the test is done
    )
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", child, str(data_dir)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        for _ in range(3)
    ]
    redis_pid = None
    try:
        urls = {proc.stdout.readline().strip() for proc in procs if proc.stdout is not None}
        assert len(urls) == 1 and urls != {""}
        redis_pid = json.loads((data_dir / "redis.json").read_text())["pid"]
        assert State(urls.pop()).ping()
    finally:
        for proc in procs:
            if proc.stdin is not None:
                proc.stdin.close()
            proc.wait(timeout=30)
        if redis_pid is not None:
            assert wait_gone(redis_pid)  # stopped by its owner at exit
            kill_if_alive(redis_pid)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="PR_SET_PDEATHSIG is Linux only")
def test_the_embedded_server_dies_when_its_owner_is_killed(short_tmp_dir: Path) -> None:
    data_dir = short_tmp_dir / "deploy"
    child = (
        "import sys, time\n"
        "from palm.state.embedded import ensure_redis\n"
        "print(ensure_redis(sys.argv[1]), flush=True)\n"
        "time.sleep(60)\n"
    )
    owner = subprocess.Popen(
        [sys.executable, "-c", child, str(data_dir)], stdout=subprocess.PIPE, text=True
    )
    redis_pid = None
    try:
        assert owner.stdout is not None
        url = owner.stdout.readline().strip()
        redis_pid = json.loads((data_dir / "redis.json").read_text())["pid"]
        assert State(url).ping()
        owner.send_signal(signal.SIGKILL)
        owner.wait(timeout=10)
        assert wait_gone(redis_pid)
        assert find_live_redis(data_dir) is None
    finally:
        if owner.poll() is None:
            owner.kill()
            owner.wait()
        if redis_pid is not None:
            kill_if_alive(redis_pid)
