"""Stopping child processes by PID, and the worker process's command line.

Real ``python -c`` children: sleepers that die of SIGTERM, and stubborn ones
that ignore it. Each says ``ready`` once its signal handling is in place.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from typing import Any

import psutil
import pytest

from palm.errors import ConfigError
from palm.ops.processes import terminate, terminate_all, worker_command
from palm.ops.worker_process import argument_parser

SLEEPER = "import time; print('ready', flush=True); time.sleep(600)"
STUBBORN = (
    "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); "
    "print('ready', flush=True); time.sleep(600)"
)
#: A parent that starts a stubborn child, reports its PID and never reaps it.
PARENT = (
    "import subprocess, sys, time; "
    f"child = subprocess.Popen([sys.executable, '-c', {STUBBORN!r}], stdout=subprocess.PIPE); "
    "child.stdout.readline(); print('ready', child.pid, sep='\\n', flush=True); time.sleep(600)"
)

Spawn = Callable[[str], "subprocess.Popen[str]"]


@pytest.fixture
def spawn() -> Iterator[Spawn]:
    """Start ``python -c CODE`` and wait for its ``ready``; SIGKILL leftovers by PID."""
    started: list[subprocess.Popen[str]] = []

    def start(code: str) -> subprocess.Popen[str]:
        proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
        started.append(proc)
        assert proc.stdout is not None
        assert proc.stdout.readline() == "ready\n", f"child {proc.pid} did not start"
        return proc

    yield start
    for proc in started:
        if proc.poll() is None:
            proc.kill()
        proc.wait()
        if proc.stdout is not None:
            proc.stdout.close()


def test_a_cooperative_child_stops_on_sigterm(spawn: Spawn) -> None:
    proc = spawn(SLEEPER)
    # the exit code shows SIGTERM ended it: SIGKILL would only come a minute later
    assert terminate(proc, grace_s=60.0) == -signal.SIGTERM
    assert proc.returncode == -signal.SIGTERM


def test_a_child_ignoring_sigterm_is_killed_after_the_grace_period(spawn: Spawn) -> None:
    proc = spawn(STUBBORN)
    start = time.monotonic()
    assert terminate(proc, grace_s=0.5) == -signal.SIGKILL
    took = time.monotonic() - start
    assert 0.5 <= took < 30.0
    assert proc.poll() == -signal.SIGKILL


def test_no_grace_kills_at_once(spawn: Spawn) -> None:
    proc = spawn(SLEEPER)
    assert terminate(proc, grace_s=0) == -signal.SIGKILL  # no SIGTERM was sent


def test_a_child_already_gone_is_fine(spawn: Spawn) -> None:
    reaped = spawn("print('ready', flush=True); raise SystemExit(3)")
    assert reaped.wait(30) == 3
    assert terminate(reaped) == 3

    zombie = spawn("print('ready', flush=True); raise SystemExit(4)")
    wait_until(lambda: psutil.Process(zombie.pid).status() == psutil.STATUS_ZOMBIE)
    assert terminate(zombie, grace_s=60.0) == 4  # exited but not yet reaped: reaped now
    assert zombie.returncode == 4


def test_a_psutil_process_that_is_not_a_child(spawn: Spawn) -> None:
    parent = spawn(PARENT)
    assert parent.stdout is not None
    grandchild = psutil.Process(int(parent.stdout.readline()))
    start = time.monotonic()
    # not ours to reap: it ends as its parent's zombie, and the exit code stays unknown
    assert terminate(grandchild, grace_s=0.5) is None
    assert 0.5 <= time.monotonic() - start < 30.0
    assert grandchild.status() == psutil.STATUS_ZOMBIE
    assert terminate(parent, grace_s=60.0) == -signal.SIGTERM
    start = time.monotonic()
    assert terminate(grandchild, grace_s=60.0) is None  # a zombie, or gone: either is fine
    assert time.monotonic() - start < 30.0


def test_a_psutil_process_of_a_child_is_reaped(spawn: Spawn) -> None:
    proc = spawn(SLEEPER)
    assert terminate(psutil.Process(proc.pid), grace_s=60.0) == -signal.SIGTERM


def test_terminate_all_costs_one_grace_period_not_one_each(spawn: Spawn) -> None:
    grace_s, stubborn = 2.0, 5
    procs = [spawn(STUBBORN) for _ in range(stubborn)]
    procs.insert(2, spawn(SLEEPER))
    sent: list[tuple[int, int]] = []
    for proc in procs:
        send = proc.send_signal

        def record(sig: int, proc: Any = proc, send: Any = send) -> None:
            sent.append((proc.pid, sig))
            send(sig)

        proc.send_signal = record  # type: ignore[method-assign]
    codes = terminate_all(procs, grace_s=grace_s)
    assert codes == [-signal.SIGKILL] * 2 + [-signal.SIGTERM] + [-signal.SIGKILL] * 3
    assert all(proc.poll() is not None for proc in procs)
    # one grace period for all: every SIGTERM goes out before any SIGKILL (one wait
    # after another would alternate them)
    kinds = [sig for _, sig in sent]
    assert kinds == [signal.SIGTERM] * len(procs) + [signal.SIGKILL] * stubborn


def test_terminate_all_of_nothing() -> None:
    assert terminate_all([], grace_s=60.0) == []


def parse(cmd: list[str]) -> Any:
    assert cmd[1:3] == ["-m", "palm.ops.worker_process"]
    return argument_parser().parse_args(cmd[3:])


def test_worker_command_parses_as_the_worker_process_reads_it() -> None:
    cmd = worker_command(
        "app.workers:Squarer",
        "squarer-0",
        push="tcp://127.0.0.1:5561",
        pull="tcp://127.0.0.1:5562",
        db="tcp://127.0.0.1:5563",
        credit=7,
        heartbeat_interval_s=0.25,
        redis="redis://127.0.0.1:6379/0",
        cluster="blue",
        log_level="WARNING",
        python="/opt/python",
    )
    assert cmd[0] == "/opt/python"
    args = parse(cmd)
    assert (args.spec, args.name) == ("app.workers:Squarer", "squarer-0")
    assert (args.push, args.pull, args.db) == (
        "tcp://127.0.0.1:5561",
        "tcp://127.0.0.1:5562",
        "tcp://127.0.0.1:5563",
    )
    assert (args.credit, args.heartbeat_interval_s) == (7, 0.25)
    assert (args.redis, args.cluster, args.log_level) == (
        "redis://127.0.0.1:6379/0",
        "blue",
        "WARNING",
    )


def test_worker_command_leaves_unset_options_to_the_worker_process() -> None:
    cmd = worker_command("app:W", "w", db="tcp://10.0.0.1:5558")
    assert cmd == [
        sys.executable,
        "-m",
        "palm.ops.worker_process",
        "app:W",
        "w",
        "--db",
        "tcp://10.0.0.1:5558",
    ]
    args, defaults = parse(cmd), argument_parser().parse_args(["app:W", "w"])
    assert args.db == "tcp://10.0.0.1:5558"
    for option in (
        "push",
        "pull",
        "credit",
        "heartbeat_interval_s",
        "redis",
        "cluster",
        "log_level",
    ):
        assert getattr(args, option) == getattr(defaults, option)


def test_worker_command_needs_somewhere_to_connect() -> None:
    with pytest.raises(ConfigError):
        worker_command("app:W", "w")
    with pytest.raises(ConfigError):
        worker_command("app:W", "w", push="tcp://127.0.0.1:5561")
    parse(worker_command("app:W", "w", push="tcp://a:1", pull="tcp://a:2"))


def wait_until(predicate: Callable[[], bool], timeout_s: float = 30.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.01)
