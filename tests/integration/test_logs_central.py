"""Central logs in real Redis streams, written by several processes."""

from __future__ import annotations

import argparse
import logging
import subprocess
import sys
import uuid
from collections.abc import Iterator
from typing import TYPE_CHECKING

import pytest

from palm.commands import logs as logs_command
from palm.state.logs import RedisLogHandler, current_request_id, read_logs
from palm.state.store import State

if TYPE_CHECKING:
    from tests.fixtures.redis import RedisProcess

pytestmark = pytest.mark.timeout(60)

CHILD = """
import logging, sys, time
from palm.state.logs import RedisLogHandler
from palm.state.store import State

url, cluster, server, count = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
handler = RedisLogHandler(State(url, cluster), server, worker="w0")
log = logging.getLogger("child")
log.addHandler(handler)
log.setLevel(logging.INFO)
sys.stdin.readline()  # start together
for i in range(count):
    log.info("record %d from %s", i, server)
    time.sleep(0.002)
log.warning("done %s", server)
handler.close()
print(handler.sent, flush=True)
"""


@pytest.fixture
def state(redis_proc: RedisProcess) -> State:
    return State(redis_proc.url, cluster=f"t{uuid.uuid4().hex[:8]}")


@pytest.fixture
def handler(state: State) -> Iterator[RedisLogHandler]:
    handler = RedisLogHandler(state, "local", worker="w1")
    yield handler
    handler.close()


@pytest.fixture
def log(handler: RedisLogHandler) -> Iterator[logging.Logger]:
    logger = logging.getLogger(f"palm.test.{uuid.uuid4().hex[:6]}")
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG)
    logger.propagate = False
    yield logger
    logger.removeHandler(handler)


def test_records_from_three_processes_come_back_in_time_order(state: State) -> None:
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", CHILD, state.url, state.cluster, f"srv{i}", "20"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        for i in range(3)
    ]
    try:
        for proc in procs:
            assert proc.stdin is not None
            proc.stdin.write("go\n")
            proc.stdin.flush()
        sent = [proc.communicate(timeout=30)[0].strip() for proc in procs]
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    assert sent == ["21", "21", "21"]
    records = list(read_logs(state))
    assert len(records) == 63
    times = [r["time"] for r in records]
    assert times == sorted(times)
    by_pid = {r["pid"]: r["server"] for r in records}
    assert by_pid == {proc.pid: f"srv{i}" for i, proc in enumerate(procs)}
    servers_in_order = [r["server"] for r in records]
    assert len(set(servers_in_order[:30])) > 1  # interleaved, not one process after another
    assert {r["worker"] for r in records} == {"w0"}

    only_srv1 = list(read_logs(state, server="srv1"))
    assert [r["message"] for r in only_srv1][:2] == ["record 0 from srv1", "record 1 from srv1"]
    warnings = list(read_logs(state, level="WARNING"))
    assert sorted(r["message"] for r in warnings) == ["done srv0", "done srv1", "done srv2"]
    assert len(list(read_logs(state, limit=5))) == 5
    assert list(read_logs(state, since=times[-1] + 1)) == []


def test_records_carry_request_ids_from_extra_or_the_context(
    state: State, handler: RedisLogHandler, log: logging.Logger
) -> None:
    token = current_request_id.set("req-ctx")
    try:
        log.info("from context")
        log.info("from extra", extra={"request_id": "req-extra"})
    finally:
        current_request_id.reset(token)
    log.info("no request")
    try:
        raise ValueError("boom")
    except ValueError:
        log.exception("failed")
    assert handler.drain(10)
    records = list(read_logs(state, server="local"))
    assert [r["request_id"] for r in records] == ["req-ctx", "req-extra", "", ""]
    assert records[3]["level"] == "ERROR"
    assert "ValueError: boom" in records[3]["message"]
    assert records[0]["host"] and records[0]["logger"] == log.name


def test_follow_yields_records_as_they_arrive(
    state: State, handler: RedisLogHandler, log: logging.Logger
) -> None:
    log.info("before")
    assert handler.drain(10)
    follow = read_logs(state, follow=True, poll_s=0.1)
    assert next(follow)["message"] == "before"
    log.info("after")
    assert next(follow)["message"] == "after"
    follow.close()


def test_palm_logs_prints_the_records(
    state: State,
    handler: RedisLogHandler,
    log: logging.Logger,
    capsys: pytest.CaptureFixture[str],
) -> None:
    log.info("hello from the cli test")
    log.error("an error line")
    assert handler.drain(10)
    parser = argparse.ArgumentParser(prog="palm")
    logs_command.register(parser.add_subparsers())
    args = parser.parse_args(
        ["logs", "--redis", state.url, "--cluster", state.cluster, "--level", "error"]
    )
    assert args.func(args) == 0
    out = capsys.readouterr().out
    assert "an error line" in out and "hello from the cli test" not in out
    args = parser.parse_args(["logs", "--redis", state.url, "--cluster", state.cluster])
    assert args.func(args) == 0
    out = capsys.readouterr().out.splitlines()
    assert len(out) == 2 and "local/w1" in out[0] and "hello from the cli test" in out[0]


def test_palm_logs_reports_an_unreachable_redis(capsys: pytest.CaptureFixture[str]) -> None:
    parser = argparse.ArgumentParser(prog="palm")
    logs_command.register(parser.add_subparsers())
    args = parser.parse_args(["logs", "--redis", "unix:///nonexistent/palm.sock"])
    assert args.func(args) == 1
    assert "unix:///nonexistent/palm.sock" in capsys.readouterr().err
