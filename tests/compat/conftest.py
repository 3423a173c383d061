"""Running the pylm-style programs of ``tests/compat/programs`` as a pylm user would:
each one a separate process, ``python <program>.py BASE [args]``, on a block of
free ports starting at BASE."""

from __future__ import annotations

import random
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.fixtures.procs import Processes

PROGRAMS = Path(__file__).resolve().parent / "programs"


def free_block(size: int = 12) -> int:
    """The first of ``size`` consecutive TCP ports on 127.0.0.1 free right now,
    below the ephemeral range."""
    for _ in range(200):
        base = random.randrange(20_000, 30_000 - size)
        sockets: list[socket.socket] = []
        try:
            for port in range(base, base + size):
                s = socket.socket()
                sockets.append(s)
                s.bind(("127.0.0.1", port))
        except OSError:
            continue
        finally:
            for s in sockets:
                s.close()
        return base
    raise RuntimeError("no block of free ports")


class Scenario:
    """The programs of one scenario, started on one block of ports."""

    def __init__(self, procs: Processes, directory: Path, logs: Path) -> None:
        self.procs = procs
        self.directory = directory
        self.logs = logs
        self.base = free_block()
        self.started: dict[str, subprocess.Popen[str]] = {}

    def start(self, program: str, *args: str) -> subprocess.Popen[str]:
        """Start ``program`` (a server or worker) in the background."""
        name = "-".join((program, *args))
        log = (self.logs / f"{name}.log").open("w")
        proc = self.procs.start(
            [sys.executable, str(self.directory / f"{program}.py"), str(self.base), *args],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        log.close()
        self.started[name] = proc
        return proc

    def output(self, name: str) -> str:
        """What a started program wrote so far."""
        return (self.logs / f"{name}.log").read_text()

    def run(self, program: str, *args: str, timeout_s: float = 60.0) -> list[str]:
        """Run ``program`` (a client) to its end; the lines it printed."""
        proc = self.procs.start(
            [sys.executable, str(self.directory / f"{program}.py"), str(self.base), *args],
            stderr=subprocess.PIPE,
        )
        out, err = proc.communicate(timeout=timeout_s)
        if proc.returncode != 0:
            logs = {name: self.output(name)[-2000:] for name in self.started}
            raise AssertionError(f"{program} exited {proc.returncode}: {err[-3000:]}\n{logs}")
        return out.splitlines()


@pytest.fixture
def scenario(procs: Processes, tmp_path: Path) -> Iterator[object]:
    """``scenario('single')`` starts the programs of ``programs/single``."""

    def make(directory: str) -> Scenario:
        return Scenario(procs, PROGRAMS / directory, tmp_path)

    yield make
