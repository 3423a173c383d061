"""``palm up``: a whole deployment file running on this machine, behind Envoy.

:class:`Up` starts, in order and each only once the previous one answers:

1. Redis: the file's URL, or an embedded ``redis-server``;
2. the masters: ``palm masters --config FILE --any-port`` (the ``masters``
   service, one child process that runs a master or server per service);
3. one worker pool per parallel or function service: ``palm worker SPEC
   --connect <db endpoint>`` (the ``workers`` service), until the master
   reports every worker;
4. the gateway (gunicorn), with a palm client per service;
5. Envoy in front of the gateway.

The gateway package reaches the other services only through their commands,
never by import. ``roles`` runs a part of the stack: ``{"gateway"}`` serves
the services of masters running on ``masters_host`` at the file's fixed
ports, ``{"envoy"}`` fronts gateways at ``gateways`` (the shape of the
docker-compose services).

:meth:`stop` stops every process started, by PID, within about
``stop_grace_s``: Envoy, the gateway, the worker pools and the masters get
SIGTERM at once (each passes it on to its own children with a shorter
grace), what is still alive after the grace gets SIGKILL, Redis stops last;
then the work directory is removed (unless ``keep_workdir``). Every child dies
with this process, even one killed with SIGKILL (on Linux, down the whole
tree), and the next ``Up`` removes the work directories such a process left.
"""

from __future__ import annotations

import builtins
import contextlib
import json
import logging
import os
import secrets
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import psutil

from palm.call.request import Client
from palm.errors import ConfigError, PalmError, TimeoutError
from palm.gateway.deploy import edge_config, write_functions
from palm.gateway.envoy_process import EnvoyProcess
from palm.gateway.pages import resolve_page
from palm.gateway.serve import GatewayServer
from palm.ops.cluster import read_ready
from palm.ops.config import ENDPOINTS, DeploymentConfig
from palm.ops.loading import load_object
from palm.ops.ports import taken_ports
from palm.ops.processes import (
    OutputTail,
    claim_workdir,
    popen,
    remove_stale_workdirs,
    terminate,
    terminate_all,
)
from palm.state.apikeys import ApiKeyStore
from palm.state.embedded import EmbeddedRedis
from palm.state.registry import RunningDeployment, register, unregister
from palm.state.store import State
from palm.wire.info import ServiceInfo

__all__ = ["ROLES", "Up"]

log = logging.getLogger(__name__)

ROLES = frozenset({"redis", "masters", "workers", "gateway", "envoy"})
#: The prefix of the work directories ``Up`` makes in the temporary directory.
WORKDIR_PREFIX = "palm-up-"
_GATEWAY_ENV = ("PALM_SECRET", "PYTHONPATH", "PALM_KEYS")


class Up:
    """The processes of one deployment file, started and stopped together."""

    def __init__(
        self,
        config: DeploymentConfig,
        *,
        port: int | None = None,
        roles: frozenset[str] = ROLES,
        listen: str = "127.0.0.1",
        masters_host: str | None = None,
        gateway_port: int = 0,
        gateways: tuple[tuple[str, int], ...] = (),
        redis_url: str | None = None,
        log_level: str = "WARNING",
        startup_timeout_s: float = 60.0,
        workdir: str | os.PathLike[str] | None = None,
        keep_workdir: bool = False,
        stop_grace_s: float = 1.5,
        keys: str | None = None,
        max_start_failures: int = 2,
    ) -> None:
        unknown = set(roles) - ROLES
        if unknown:
            raise ConfigError(f"unknown roles {sorted(unknown)}; known: {sorted(ROLES)}")
        if "envoy" in roles and "gateway" not in roles and not gateways:
            raise ConfigError("Envoy without a gateway needs the gateways' HOST:PORT")
        self.config = config
        self.port = config.edge.port if port is None else port
        self.roles = roles
        self.listen = listen
        self.masters_host = masters_host
        self.gateway_port = gateway_port
        self.gateways = gateways
        self.redis_url = redis_url or config.redis
        if self.redis_url is None and "redis" not in roles:
            # a part of a split deployment (docker-compose): the shared Redis holds the API keys
            self.redis_url = os.environ.get("PALM_REDIS_URL") or None
        #: the CURVE keys directory every process gets as $PALM_KEYS (None: inherited)
        self.keys = keys or config.keys
        self.log_level = log_level
        #: a pool gives up (and so does start) after this many failed starts in a row
        self.max_start_failures = max_start_failures
        self.startup_timeout_s = startup_timeout_s
        #: seconds a child has after SIGTERM on stop; its own children get 2/3 of it
        self.stop_grace_s = stop_grace_s
        self.keep_workdir = keep_workdir
        self._own_workdir = workdir is None
        if workdir is None:
            remove_stale_workdirs(tempfile.gettempdir(), WORKDIR_PREFIX)
            self.workdir = Path(tempfile.mkdtemp(prefix=WORKDIR_PREFIX))
            claim_workdir(self.workdir)
        else:
            self.workdir = Path(workdir)
        #: the running services' endpoints, for clients that talk palm directly
        self.deployment_file = self.workdir / "deployment.json"
        self.secret = os.environ.get("PALM_SECRET") or secrets.token_hex(16)
        self.services: dict[str, dict[str, Any]] = {}
        self.processes: dict[str, int] = {}
        self.gateway: GatewayServer | None = None
        #: the API key ``palm up`` made (or kept) for its guide and ``--once``
        self.api_key: str | None = None
        self.edge: EnvoyProcess | None = None
        #: this run's entry among the running deployments (``palm logs`` finds it there)
        self.registered: RunningDeployment | None = None
        self._children: list[subprocess.Popen[str]] = []
        #: what each child started with :meth:`_spawn` wrote last on stderr, by label
        self._tails: dict[str, OutputTail] = {}
        # (label, stop(grace_s)) of what was started, oldest first
        self._stack: list[tuple[str, Callable[[float], None]]] = []

    # starting ----------------------------------------------------------------

    def start(self) -> Up:
        try:
            self._check_ports()
            if "redis" in self.roles and self.redis_url is None:
                self._start_redis()
            if "masters" in self.roles:
                self._start_masters()
            else:
                self.services = self._fixed_addresses()
            # the gateway starts while the workers do (it needs only the masters)
            pools = self._start_workers() if "workers" in self.roles else []
            if "gateway" in self.roles:
                self._start_gateway()
            for name, count in pools:
                self._wait_for_workers(name, count)
            if "envoy" in self.roles:
                self._start_envoy()
            self._register()
        except BaseException:
            self.stop()
            raise
        return self

    def _check_ports(self) -> None:
        """Refuse to start anything when a fixed port of this deployment is taken."""
        wanted: list[tuple[str, int, str]] = []
        if "envoy" in self.roles:
            wanted.append((self.listen, self.port, "the edge's (Envoy)"))
        if "gateway" in self.roles:
            host = self.listen if "envoy" not in self.roles else "127.0.0.1"
            wanted.append((host, self.gateway_port, "the gateway's"))
        taken = taken_ports(wanted)
        if taken:
            raise ConfigError(
                "; ".join(taken) + ": stop what holds it, or pick another port (--port)"
            )

    def _env(self) -> dict[str, str]:
        env = dict(os.environ)
        env["PALM_SECRET"] = self.secret
        if self.redis_url:
            env["PALM_REDIS_URL"] = self.redis_url
        env["PALM_CLUSTER"] = self.config.name
        if self.keys:
            env["PALM_KEYS"] = self.keys
        if self.config.path is not None:
            here = str(self.config.path.parent)
            env["PYTHONPATH"] = os.pathsep.join(p for p in (here, env.get("PYTHONPATH")) if p)
        return env

    def _spawn(self, label: str, args: list[str], **options: Any) -> subprocess.Popen[str]:
        cwd = str(self.config.path.parent) if self.config.path is not None else None
        cmd = [sys.executable, "-m", "palm", "--log-level", self.log_level, *args]
        # its stderr goes to a file in the work directory, followed onto ours
        tail = OutputTail(self.workdir / "logs" / f"{label.replace(':', '-')}.stderr")
        self._tails[label] = tail
        proc: subprocess.Popen[str] = popen(
            cmd, env=self._env(), cwd=cwd, text=True, stderr=tail.sink, **options
        )
        self._children.append(proc)
        self._stack.append((label, lambda grace_s: self._stop_child(proc, grace_s)))
        self.processes[label] = proc.pid
        return proc

    def _start_redis(self) -> None:
        embedded = EmbeddedRedis(
            data_dir=self.workdir / "redis",
            cluster=self.config.name,
            stop_timeout_s=self.stop_grace_s,
        )
        self._stack.append(("redis", lambda _grace_s: embedded.stop()))
        self.redis_url = embedded.start()
        if embedded.pid is not None:
            self.processes["redis"] = embedded.pid

    def _start_masters(self) -> None:
        if self.config.path is None:
            raise ConfigError("palm up needs the deployment read from a file")
        args = ["masters", "--config", str(self.config.path), "--any-port", "--host", "127.0.0.1"]
        args += ["--grace-s", f"{self._inner_grace_s():.2f}"]
        proc = self._spawn("masters", args, stdout=subprocess.PIPE)
        try:
            ready = read_ready(proc, self.startup_timeout_s)
        except (builtins.TimeoutError, RuntimeError) as exc:
            raise ConfigError(
                f"the masters did not start: {exc}{self._last_words('masters')}"
            ) from exc
        self.services = dict(ready["services"])
        self.deployment_file.write_text(
            json.dumps(
                {
                    "kind": "masters",
                    "name": self.config.name,
                    "redis": self.redis_url,
                    "services": self.services,
                },
                indent=2,
            )
        )

    def _last_words(self, label: str, count: int = 12) -> str:
        """The last lines a child wrote on stderr, to end an error message with."""
        tail = self._tails.get(label)
        lines = tail.lines()[-count:] if tail is not None else []
        return "; its last lines:\n" + "\n".join(f"  {line}" for line in lines) if lines else ""

    def _fixed_addresses(self) -> dict[str, dict[str, Any]]:
        """The services' endpoints from the file's ports, on ``masters_host``."""
        host = self.masters_host or self.config.host
        found: dict[str, dict[str, Any]] = {}
        for name, service in self.config.services.items():
            if not service.port:
                raise ConfigError(f"service {name!r} needs a fixed port to be found on {host}")
            found[name] = {"kind": service.kind, "addresses": service.bind_addresses(host)}
        return found

    def _start_workers(self) -> list[tuple[str, int]]:
        """Start a worker pool per service that has workers; (service, workers) of each."""
        pools: list[tuple[str, int]] = []
        for name, service in self.config.services.items():
            spec = service.worker_spec
            if spec is None or service.workers == 0:
                continue
            db = self.services[name]["addresses"]["db"]
            args = ["worker", spec, "--connect", db, "--processes", str(service.workers)]
            args += ["--grace-s", f"{self._inner_grace_s():.2f}", *service.deps_arguments]
            # a worker that fails twice in a row at start will not start: say so now
            args += ["--max-start-failures", str(self.max_start_failures)]
            self._spawn(f"workers:{name}", [*args, "--name", name])
            pools.append((name, service.workers))
        return pools

    def _wait_for_workers(self, name: str, count: int) -> None:
        probe = Client(self.services[name]["addresses"]["db"], name, timeout_s=2.0)
        deadline = time.monotonic() + self.startup_timeout_s
        delay_s = 0.02
        try:
            while True:
                with contextlib.suppress(PalmError):
                    if len(ServiceInfo.from_wire(probe.info()).workers) >= count:
                        return
                for label, pid in self.processes.items():
                    proc = next((p for p in self._children if p.pid == pid), None)
                    if proc is not None and proc.poll() is not None:
                        raise ConfigError(
                            f"{label} (pid {pid}) exited with {proc.returncode} while "
                            f"{name} was starting{self._last_words(label)}"
                        )
                if time.monotonic() > deadline:
                    raise TimeoutError(
                        f"{name}: {count} workers not up in {self.startup_timeout_s} s"
                    )
                time.sleep(delay_s)
                delay_s = min(delay_s * 2, 0.2)
        finally:
            probe.close()

    def _gateway_services(self) -> dict[str, Any]:
        specs: dict[str, Any] = {}
        for name, service in self.config.services.items():
            addresses = self.services[name]["addresses"]
            if service.kind == "standalone":
                specs[name] = {"kind": "standalone", "address": addresses["address"]}
                continue
            spec = {
                "kind": "parallel" if service.kind == "parallel" else "function",
                **{f"{label}_address": addresses[label] for label in ("push", "pull", "db")},
            }
            if service.kind == "function":
                functions = {fn: load_object(target) for fn, target in service.functions.items()}
                path = self.workdir / "functions" / f"{name}.pkl"
                spec["functions_path"] = write_functions(path, functions)
            specs[name] = spec
        for name, service in self.config.services.items():
            if service.page:
                specs[name]["page"] = str(resolve_page(service.page))
        return specs

    def _start_gateway(self) -> None:
        gateway = GatewayServer(
            {
                "services": self._gateway_services(),
                "redis_url": self.redis_url,
                "timeout_s": self.config.edge.route_timeout_s,
                "cluster": self.config.name,
                "auth": self.config.edge.auth,
            },
            host=self.listen if "envoy" not in self.roles else "127.0.0.1",
            port=self.gateway_port,
            workers=self.config.edge.gateway_workers,
            threads=self.config.edge.gateway_threads,
            workdir=self.workdir / "gateway",
            env={
                k: v
                for k, v in self._env().items()
                if k in ("PALM_SECRET", "PYTHONPATH", "PALM_KEYS")
            },
            graceful_timeout_s=max(1, int(self._inner_grace_s())),
        )
        self._stack.append(("gateway", lambda grace_s: gateway.stop(timeout_s=grace_s)))
        gateway.start()
        self.gateway = gateway
        self.processes["gateway"] = gateway.pid
        self.api_key = self._api_key()

    def _api_key(self) -> str | None:
        """The key ``palm up`` calls its edge with: the one kept in the work dir while it
        is still valid, else a new one (None when the edge is open)."""
        if self.config.edge.auth == "open":
            log.warning("edge.auth is open: anyone who reaches the edge can call every service")
            return None
        if not self.redis_url:
            raise ConfigError("edge.auth api_keys needs Redis")
        kept = self.workdir / "api_key"
        with State(self.redis_url, self.config.name) as state:
            store = ApiKeyStore(state)
            if kept.exists():
                token = kept.read_text().strip()
                if store.lookup(token) is not None:
                    return token
            _key, token = store.create("palm up")
        kept.touch(mode=0o600)
        kept.write_text(token + "\n")
        return token

    def _start_envoy(self) -> None:
        gateways = (self.gateway.address,) if self.gateway is not None else self.gateways
        edge = self.config.edge
        access_log = edge.access_log
        if access_log and access_log != "-" and self.config.path is not None:
            access_log = str(self.config.path.parent / access_log)
        envoy = EnvoyProcess(
            edge_config(
                self.config.routes(),
                gateways,
                port=self.port,
                listen_address=self.listen,
                load_balancer=edge.load_balancer,
                rate_limit=edge.rate_limit,
                timeouts={
                    "route_s": edge.route_timeout_s,
                    "request_headers_s": edge.request_headers_timeout_s,
                    "stream_idle_s": edge.stream_idle_timeout_s,
                    "downstream_idle_s": edge.connection_idle_timeout_s,
                },
                access_log=access_log,
                max_connections=edge.max_connections,
            ),
            workdir=self.workdir / "envoy",
        )
        self._stack.append(("envoy", lambda grace_s: envoy.stop(timeout_s=grace_s)))
        envoy.start()
        self.edge = envoy
        self.processes["envoy"] = envoy.pid

    def _register(self) -> None:
        """Record the stack among the running deployments, for ``palm logs``/``stats``."""
        if self.redis_url is None or "masters" not in self.roles:
            return
        url = self.url if self.edge is not None or self.gateway is not None else ""
        path = str(self.config.path or "")
        self.registered = register(self.config.name, self.redis_url, url=url, config=path)

    # running -----------------------------------------------------------------

    @property
    def url(self) -> str:
        if self.edge is not None:
            return self.edge.url
        if self.gateway is not None:
            return self.gateway.url
        raise ConfigError("neither Envoy nor the gateway runs here")

    def pids(self) -> list[int]:
        """Every process started, with their descendants (workers, gunicorn's workers)."""
        found: set[int] = set()
        for pid in self.processes.values():
            found.add(pid)
            with contextlib.suppress(psutil.Error):
                found.update(child.pid for child in psutil.Process(pid).children(recursive=True))
        return sorted(found)

    def _inner_grace_s(self) -> float:
        """The grace a child gives its own children, so it exits within ours."""
        return self.stop_grace_s * 2 / 3

    def stop(self, timeout_s: float | None = None) -> list[int]:
        """Stop everything; return the PIDs that had to be killed at the end.

        Every child but Redis gets SIGTERM at once and ``timeout_s`` (default
        ``stop_grace_s``) to exit before SIGKILL; then any descendant left is
        SIGKILLed, Redis is stopped, and the work directory is removed.
        """
        grace_s = self.stop_grace_s if timeout_s is None else timeout_s
        if self.registered is not None:
            unregister(self.registered)
            self.registered = None
        tracked = []
        for pid in self.pids():
            with contextlib.suppress(psutil.Error):
                tracked.append(psutil.Process(pid))
        stack, self._stack = self._stack, []
        first = [(label, stop) for label, stop in stack if label != "redis"]
        last = [(label, stop) for label, stop in stack if label == "redis"]
        if first:
            with ThreadPoolExecutor(len(first), thread_name_prefix="palm-up-stop") as pool:
                for _label, stop in first:
                    pool.submit(self._run_stop, stop, grace_s)
        redis_pids = {self.processes.get("redis")}
        _gone, alive = psutil.wait_procs(
            [proc for proc in tracked if proc.pid not in redis_pids], timeout=0.5
        )
        for proc in alive:
            log.warning("process %d still alive after stop; killing it", proc.pid)
        terminate_all(alive, grace_s=0)
        for _label, stop in reversed(last):
            self._run_stop(stop, grace_s)
        for tail in self._tails.values():
            tail.close()
        if self._own_workdir and not self.keep_workdir:
            shutil.rmtree(self.workdir, ignore_errors=True)
        return [proc.pid for proc in alive]

    @staticmethod
    def _run_stop(stop: Callable[[float], None], grace_s: float) -> None:
        try:
            stop(grace_s)
        except Exception as exc:  # keep stopping the rest
            log.error("error while stopping: %r", exc)

    def _stop_child(self, proc: subprocess.Popen[str], grace_s: float) -> None:
        terminate(proc, grace_s=grace_s)
        if proc.stdout is not None:
            proc.stdout.close()

    def addresses(self) -> dict[str, str]:
        """Where each service of the file is served, for the printed summary."""
        return {
            name: " ".join(
                str(info["addresses"][label])
                for label in ("address", *ENDPOINTS)
                if label in info["addresses"] and label in ("address", "pull", "db")
            )
            for name, info in self.services.items()
        }
