"""Run every master and standalone server of a deployment file, and keep them running.

:class:`MastersService` starts one child process per service of a
:class:`~palm.ops.config.DeploymentConfig`: ``palm serve`` for a standalone
service, ``palm master`` for a parallel or function service (its workers run
elsewhere, in ``palm worker`` pools that connect to the master's db endpoint).
Each child binds the service's configured ports (or ports the OS picks) and
reports ready; a child that dies is started again on the same endpoints.
Once all are up, the service prints one JSON line::

    {"event": "ready", "kind": "masters", "name": ..., "services":
     {"echo": {"kind": "standalone", "pid": ..., "addresses": {"address": ...}},
      "demo": {"kind": "parallel", "pid": ..., "addresses": {"pull": ..., "db": ...}}}}

Stopping sends SIGTERM to every child by PID, then SIGKILL after a grace period.
The children die with this process, even one killed with SIGKILL (on Linux).
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from typing import Any

from palm.errors import ConfigError
from palm.ops.cluster import read_ready
from palm.ops.config import ENDPOINTS, DeploymentConfig, ServiceConfig
from palm.ops.processes import popen, terminate_all
from palm.serve.stopper import Stopper

__all__ = ["MastersService"]

log = logging.getLogger(__name__)

_FLAGS = {
    "pull": "--pull",
    "push": "--push",
    "worker_pull": "--worker-pull",
    "worker_push": "--worker-push",
    "db": "--db",
}


@dataclass
class _Child:
    service: ServiceConfig
    binds: dict[str, str]
    proc: subprocess.Popen[str] | None = None
    addresses: dict[str, str] = field(default_factory=dict)
    restarts: int = 0
    restart_at: float = 0.0
    backoff_s: float = 0.0


class MastersService:
    """The masters and standalone servers of one deployment, as child processes."""

    def __init__(
        self,
        config: DeploymentConfig,
        *,
        host: str | None = None,
        any_port: bool = False,
        env: dict[str, str] | None = None,
        log_level: str = "WARNING",
        startup_timeout_s: float = 30.0,
        grace_s: float = 5.0,
    ) -> None:
        self.config = config
        self.host = host or config.host
        self.env = env
        self.log_level = log_level
        self.startup_timeout_s = startup_timeout_s
        self.grace_s = grace_s
        self.children = [
            _Child(service, service.bind_addresses(self.host, any_port=any_port))
            for service in config.services.values()
        ]
        self._lock = threading.Lock()
        self._stopped = threading.Event()

    def _command(self, child: _Child) -> list[str]:
        service = child.service
        cmd = [sys.executable, "-m", "palm", "--log-level", self.log_level]
        if service.kind == "standalone":
            assert service.server is not None
            name = service.name
            return [
                *cmd,
                "serve",
                service.server,
                "--name",
                name,
                "--address",
                child.binds["address"],
            ]
        cmd += ["master", "--name", service.name]
        for label in ENDPOINTS:
            cmd += [_FLAGS[label], child.binds[label]]
        return cmd

    def _spawn(self, child: _Child) -> None:
        self._launch(child)
        self._await(child)

    def _launch(self, child: _Child) -> None:
        """Start ``child``'s process (:meth:`_await` reads that it is ready)."""
        env = dict(os.environ)
        if self.config.path is not None:
            # user modules named in the file are importable from the file's folder
            here = str(self.config.path.parent)
            env["PYTHONPATH"] = os.pathsep.join(p for p in (here, env.get("PYTHONPATH")) if p)
        if self.config.redis:
            env.setdefault("PALM_REDIS_URL", self.config.redis)
        env.update(self.env or {})
        cwd = str(self.config.path.parent) if self.config.path is not None else None
        proc: subprocess.Popen[str] = popen(
            self._command(child), stdout=subprocess.PIPE, text=True, env=env, cwd=cwd
        )
        child.proc = proc

    def _await(self, child: _Child) -> None:
        """Read ``child``'s ready line: the endpoints it bound."""
        proc = child.proc
        assert proc is not None
        try:
            ready = read_ready(proc, self.startup_timeout_s)
        except (TimeoutError, RuntimeError) as exc:
            raise ConfigError(f"service {child.service.name!r} did not start: {exc}") from exc
        labels = ("address",) if child.service.kind == "standalone" else ENDPOINTS
        child.addresses = {label: str(ready[label]) for label in labels}
        # a restart binds the same endpoints, so workers and clients find it again
        child.binds = dict(child.addresses)
        log.info(
            "%s %s (pid %d) on %s",
            child.service.kind,
            child.service.name,
            proc.pid,
            child.addresses,
        )

    def start(self) -> dict[str, dict[str, Any]]:
        """Start every service; return what :meth:`describe` returns.

        The children start together (each one's imports take most of its start),
        then each one's ready line is read in turn.
        """
        try:
            with self._lock:
                for child in self.children:
                    self._launch(child)
                for child in self.children:
                    self._await(child)
        except BaseException:
            self.stop()
            raise
        return self.describe()

    def describe(self) -> dict[str, dict[str, Any]]:
        return {
            child.service.name: {
                "kind": child.service.kind,
                "pid": child.proc.pid if child.proc is not None else None,
                "addresses": dict(child.addresses),
            }
            for child in self.children
        }

    @property
    def pids(self) -> list[int]:
        with self._lock:
            return [
                c.proc.pid for c in self.children if c.proc is not None and c.proc.poll() is None
            ]

    def check(self) -> None:
        """Start again, on the same endpoints, any child that exited."""
        now = time.monotonic()
        with self._lock:
            for child in self.children:
                if self._stopped.is_set():
                    return
                proc = child.proc
                if proc is not None and proc.poll() is None:
                    continue
                if proc is not None:
                    child.backoff_s = min(max(child.backoff_s * 2, 0.5), 30.0)
                    child.restart_at = now + child.backoff_s
                    log.warning(
                        "%s (pid %d) exited with %s; restarting in %.1f s",
                        child.service.name,
                        proc.pid,
                        proc.returncode,
                        child.backoff_s,
                    )
                    _close(proc)
                    child.proc = None
                elif now >= child.restart_at:
                    child.restarts += 1
                    try:
                        self._spawn(child)
                    except ConfigError as exc:
                        log.error("%s", exc)

    def stop(self) -> None:
        """SIGTERM every child by PID, SIGKILL those still alive after the grace period."""
        self._stopped.set()
        with self._lock:
            procs = [c.proc for c in self.children if c.proc is not None]
            terminate_all(procs, grace_s=self.grace_s)
            for proc in procs:
                _close(proc)

    def run(self, on_ready: Any = None, poll_s: float = 0.2) -> None:
        """Start, call ``on_ready(description)``, supervise until SIGINT/SIGTERM, stop."""
        stopper = Stopper()
        try:
            with stopper.on_signals():
                try:
                    described = self.start()
                    if on_ready is not None:
                        on_ready(described)
                    while not stopper.wait(poll_s):
                        self.check()
                finally:
                    self.stop()
        finally:
            stopper.close()


def _close(proc: subprocess.Popen[str]) -> None:
    if proc.stdout is not None and not proc.stdout.closed:
        proc.stdout.close()
