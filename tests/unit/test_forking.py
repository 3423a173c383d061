"""Children forked from the test process: exit codes, environment, stdout, lifetime."""

from __future__ import annotations

import os
import signal
import threading
import time
from collections.abc import Iterator

import pytest

from palm.ops.forking import ForkedProcess, can_fork, fork_main
from palm.ops.processes import terminate

pytestmark = pytest.mark.skipif(not can_fork(), reason="forking children is Linux-only")


@pytest.fixture
def children() -> Iterator[list[ForkedProcess]]:
    made: list[ForkedProcess] = []
    yield made
    for child in made:
        terminate(child, grace_s=0)  # SIGKILL and reap whatever is left


def fork(children: list[ForkedProcess], main, argv, **options) -> ForkedProcess:  # type: ignore[no-untyped-def]
    child = ForkedProcess(fork_main(main, argv, **options), argv)
    children.append(child)
    return child


def test_the_child_runs_main_with_its_argv_env_and_stdout(children: list[ForkedProcess]) -> None:
    read_fd, write_fd = os.pipe()

    def main(argv: list[str]) -> int:
        print(" ".join(argv), os.environ.get("ONLY"), len(os.environ), flush=True)
        return 7

    try:
        child = fork(children, main, ["a", "b"], env={"ONLY": "this"}, stdout=write_fd)
    finally:
        os.close(write_fd)
    with os.fdopen(read_fd) as out:
        assert out.read() == "a b this 1\n"  # the whole environment, and stdout the pipe
    assert child.wait(30) == 7


def test_an_exception_or_exit_in_main_is_the_exit_code(children: list[ForkedProcess]) -> None:
    def fails(argv: list[str]) -> int:
        raise RuntimeError("boom")

    def exits(argv: list[str]) -> int:
        raise SystemExit(3)

    assert fork(children, fails, [], env={}).wait(30) == 1
    assert fork(children, exits, [], env={}).wait(30) == 3


def test_a_child_forked_from_a_passing_thread_outlives_it(children: list[ForkedProcess]) -> None:
    read_fd, write_fd = os.pipe()

    def waits(argv: list[str]) -> int:
        os.close(write_fd)
        return 0 if os.read(read_fd, 1) == b"x" else 1

    box: list[ForkedProcess] = []
    starter = threading.Thread(
        target=lambda: box.append(fork(children, waits, [], env={}, death_signal=signal.SIGKILL))
    )
    starter.start()
    starter.join()
    # until the kernel has let the thread go (and so sent any death signal)
    task = f"/proc/self/task/{starter.native_id}"
    deadline = time.monotonic() + 30
    while os.path.exists(task) and time.monotonic() < deadline:
        time.sleep(0.01)
    assert not os.path.exists(task)
    os.close(read_fd)
    (child,) = box
    # the death signal follows the forking thread: the fork happened on one that lasts
    assert child.poll() is None
    os.write(write_fd, b"x")
    os.close(write_fd)
    assert child.wait(30) == 0


def test_sigterm_stops_a_child_that_set_no_handler(children: list[ForkedProcess]) -> None:
    read_fd, write_fd = os.pipe()

    def hangs(argv: list[str]) -> int:
        os.close(read_fd)
        os.write(write_fd, b"up")
        signal.pause()
        return 0

    child = fork(children, hangs, [], env={})
    os.close(write_fd)
    assert os.read(read_fd, 2) == b"up"
    os.close(read_fd)
    child.terminate()
    assert child.wait(30) == -signal.SIGTERM
