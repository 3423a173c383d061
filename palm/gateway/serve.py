"""Serve the gateway with gunicorn in a child process.

::

    with GatewayServer({"services": {...}}) as gw:
        gw.url        # http://127.0.0.1:<port chosen by the OS>

The parent binds the listening socket (port 0 the first time, the same port on
a restart), hands it to gunicorn as ``fd://N`` and closes its own copy, so the
port is known before gunicorn starts and nothing else can take it. Readiness
is ``GET /healthz`` answering 200. The configuration reaches the app as
``PALM_GATEWAY_CONFIG`` (JSON); the app reads it when gunicorn builds it.
gunicorn dies with the process that started it and its workers die with
gunicorn (``post_fork`` in :mod:`palm.gateway.gunicorn_conf`), even after SIGKILL.
"""

from __future__ import annotations

import http.client
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from types import TracebackType
from typing import IO, Any

import psutil

from palm.errors import ConfigError, TimeoutError
from palm.ops.processes import AnyProcess, popen, terminate, terminate_all

__all__ = ["EDGE_WORKER", "GatewayServer"]

#: palm's worker class: uvicorn's event loop, parallel jobs answered on it.
EDGE_WORKER = "palm.gateway.worker.EdgeWorker"
#: gunicorn worker classes that serve ASGI apps (the rest serve the WSGI app).
ASGI_WORKERS = frozenset({EDGE_WORKER, "uvicorn_worker.UvicornWorker"})

#: The directory palm is imported from (a checkout or site-packages): the gunicorn
#: process imports the gateway from there whatever its working directory.
IMPORT_ROOT = Path(__file__).resolve().parents[2]


class GatewayServer:
    """gunicorn serving the gateway on 127.0.0.1.

    With palm's worker class (the default) each gunicorn worker runs an event
    loop serving :func:`palm.gateway.asgi.create_asgi_app`, and ``threads`` is the
    size of its thread pool for the Flask routes. With a WSGI worker class
    (``"gthread"``, ``"sync"``...) gunicorn serves
    :func:`palm.gateway.app.create_app` and ``threads`` is gunicorn's own.
    """

    def __init__(
        self,
        config: dict[str, Any] | None = None,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        workers: int = 2,
        threads: int = 32,
        worker_class: str = EDGE_WORKER,
        keep_alive_s: int = 5,
        graceful_timeout_s: int = 2,
        startup_timeout_s: float = 30.0,
        workdir: str | os.PathLike[str] | None = None,
        env: dict[str, str] | None = None,
    ) -> None:
        self.config = dict(config or {})
        self.extra_env = dict(env or {})
        self.host = host
        self.port = port
        self.workers = workers
        self.threads = threads
        self.worker_class = worker_class
        self.keep_alive_s = keep_alive_s
        self.graceful_timeout_s = graceful_timeout_s
        self.startup_timeout_s = startup_timeout_s
        self._own_workdir = workdir is None
        self.workdir = (
            Path(workdir) if workdir is not None else Path(tempfile.mkdtemp(prefix="palm-gw-"))
        )
        self.log_path = self.workdir / "gunicorn.log"
        self.process: subprocess.Popen[bytes] | None = None
        self._log_file: IO[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def address(self) -> tuple[str, int]:
        return (self.host, self.port)

    @property
    def pid(self) -> int:
        if self.process is None:
            raise ConfigError("the gateway is not running")
        return self.process.pid

    def _bind(self) -> socket.socket:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((self.host, self.port))
        sock.listen(1024)
        self.port = sock.getsockname()[1]
        return sock

    def start(self) -> GatewayServer:
        if self.process is not None:
            raise ConfigError("the gateway is already running")
        metrics_dir = self.workdir / "metrics"
        shutil.rmtree(metrics_dir, ignore_errors=True)
        metrics_dir.mkdir(parents=True)
        env = {**os.environ, **self.extra_env}
        env["PYTHONPATH"] = os.pathsep.join(
            part for part in (str(IMPORT_ROOT), env.get("PYTHONPATH", "")) if part
        )
        asgi = self.worker_class in ASGI_WORKERS
        config = dict(self.config)
        if asgi:
            config.setdefault("wsgi_threads", self.threads)
        env["PALM_GATEWAY_CONFIG"] = json.dumps(config)
        env["PROMETHEUS_MULTIPROC_DIR"] = str(metrics_dir)
        sock = self._bind()
        fd = sock.fileno()
        command = [
            sys.executable,
            "-m",
            "gunicorn",
            "--bind",
            f"fd://{fd}",
            "--workers",
            str(self.workers),
            "--worker-class",
            self.worker_class,
            "--threads",
            str(self.threads),
            "--keep-alive",
            str(self.keep_alive_s),
            "--graceful-timeout",
            str(self.graceful_timeout_s),
            "--timeout",
            "120",
            "--config",
            "python:palm.gateway.gunicorn_conf",
            "palm.gateway.asgi:create_asgi_app()" if asgi else "palm.gateway.app:create_app()",
        ]
        self._log_file = open(self.log_path, "ab")  # noqa: SIM115 - closed in stop()
        try:
            self.process = popen(  # dies with this process; its workers die with it
                command,
                env=env,
                pass_fds=(fd,),
                stdin=subprocess.DEVNULL,
                stdout=self._log_file,
                stderr=subprocess.STDOUT,
            )
        finally:
            sock.close()  # gunicorn holds the socket now
        try:
            self._wait_ready()
        except BaseException:
            self.stop()
            raise
        return self

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + self.startup_timeout_s
        delay_s = 0.01
        while True:
            if self.process is None or self.process.poll() is not None:
                code = None if self.process is None else self.process.returncode
                raise ConfigError(f"gunicorn exited with {code}: {self.log_tail()}")
            try:
                conn = http.client.HTTPConnection(self.host, self.port, timeout=2.0)
                try:
                    conn.request("GET", "/healthz")
                    if conn.getresponse().status == 200:
                        return
                finally:
                    conn.close()
            except (OSError, http.client.HTTPException):
                pass
            if time.monotonic() > deadline:
                raise TimeoutError(f"gateway not ready in {self.startup_timeout_s} s")
            time.sleep(delay_s)
            delay_s = min(delay_s * 2, 0.2)

    def _workers(self) -> list[psutil.Process]:
        """The gunicorn workers (psutil checks PID reuse before signalling)."""
        if self.process is None:
            return []
        try:
            children: list[psutil.Process] = psutil.Process(self.process.pid).children(True)
            return children
        except psutil.Error:
            return []

    def kill(self) -> None:
        """SIGKILL the master and every worker by PID (a crash, for tests).

        The master goes first: killed after a worker, it could fork a
        replacement that would keep the listening socket (and outlive it)."""
        workers = self._workers()
        targets: list[AnyProcess] = [] if self.process is None else [self.process]
        targets += workers
        self.process = None
        terminate_all(targets, grace_s=0)
        self._close_log()

    def stop(self, timeout_s: float = 10.0) -> None:
        """SIGTERM gunicorn (graceful), then SIGKILL what is left, by PID."""
        workers = self._workers()
        proc, self.process = self.process, None
        if proc is not None:
            terminate(proc, grace_s=timeout_s)
        terminate_all(workers, grace_s=0)  # gunicorn stops them; any it left behind
        self._close_log()

    def _close_log(self) -> None:
        if self._log_file is not None:
            self._log_file.close()
            self._log_file = None

    def close(self) -> None:
        self.stop()
        if self._own_workdir:
            shutil.rmtree(self.workdir, ignore_errors=True)

    def log_tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def __enter__(self) -> GatewayServer:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
