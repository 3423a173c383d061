"""What ``palm demo`` runs: a standalone server and a parallel cluster, called for real.

The classes and functions here are also the services of the repository's
``palm.yaml`` (``palm up``): :class:`DemoServer`, :class:`DemoWorker` and
:func:`factorial`.
"""

from __future__ import annotations

import math
import subprocess
import sys
import time

from palm.call.request import Client
from palm.ops.cluster import LocalCluster, read_ready
from palm.ops.processes import terminate
from palm.serve.server import Server
from palm.serve.worker import Worker

__all__ = ["DemoServer", "DemoWorker", "factorial", "run"]


class DemoServer(Server):
    """The presentation's standalone server."""

    def foo(self, message: bytes) -> bytes:
        return b"you sent me " + message


class DemoWorker(Worker):
    """The presentation's parallel worker."""

    def foo(self, message: bytes) -> bytes:
        return self.name.encode() + b" processed " + message


def factorial(n: int | str | bytes) -> int:
    """``n!`` for an integer, or for the digits of a request body."""
    return math.factorial(int(n))


def _square(x: int) -> int:
    return x * x


def run(out: object = None) -> int:
    write = print
    server = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "palm",
            "--log-level",
            "WARNING",
            "serve",
            "palm.demo:DemoServer",
            "--name",
            "my_server",
            "--address",
            "tcp://127.0.0.1:*",
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        address = read_ready(server)["address"]
        write(f"standalone server 'my_server' on {address} (pid {server.pid})")
        with Client(address, "my_server") as client:
            write(f"Client got:  {client.job('foo', b'a message')!r}")
        with LocalCluster(workers=2, name="demo") as cluster:
            cluster.wait_for_workers()
            write(f"parallel master 'demo' on {cluster.addresses['pull']} with 2 workers")
            start = time.perf_counter()
            squares = cluster.map(_square, range(100_000))
            took = time.perf_counter() - start
            write(f"map of 100,000 squares: sum {sum(squares)} in {took:.2f} s")
    finally:
        terminate(server, grace_s=5.0)
        if server.stdout is not None:
            server.stdout.close()
    return 0
