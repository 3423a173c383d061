"""PUMA deployments: Redis, a local cluster, the gateway and Envoy, as one object.

:mod:`palm.puma` (the user API) reaches :class:`Puma` through the ``puma``
entry point of the ``palm.edge`` group, so the library never imports the
gateway. :func:`edge_config` turns edge settings into an :class:`EdgeConfig`
for both PUMA and ``palm up``.
"""

from __future__ import annotations

import math
import shutil
import sys
import tempfile
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any, TextIO

import cloudpickle

from palm.errors import ConfigError
from palm.gateway.envoy_config import CircuitBreakers, EdgeConfig, RateLimit, Timeouts
from palm.gateway.envoy_process import EnvoyProcess
from palm.gateway.serve import GatewayServer
from palm.ops.cluster import LocalCluster
from palm.state.embedded import EmbeddedRedis

__all__ = ["Puma", "edge_config", "write_functions"]


def edge_config(
    routes: Mapping[str, str],
    gateways: tuple[tuple[str, int], ...],
    *,
    port: int = 0,
    listen_address: str = "127.0.0.1",
    load_balancer: str = "round_robin",
    rate_limit: Mapping[str, Any] | None = None,
    circuit_breakers: Mapping[str, Any] | None = None,
    timeouts: Mapping[str, float] | None = None,
    access_log: str | None = None,
    max_connections: int = 10000,
) -> EdgeConfig:
    """The edge's Envoy configuration from plain settings (``timeouts`` in seconds,
    keyed like :class:`Timeouts`)."""
    return EdgeConfig(
        services=dict(routes),
        gateways=gateways,
        listen_address=listen_address,
        listen_port=port,
        lb_policy=load_balancer,
        rate_limit=RateLimit(**(rate_limit or {})),
        circuit_breakers=CircuitBreakers(**(circuit_breakers or {})),
        timeouts=Timeouts(**(timeouts or {})),
        access_log=access_log,
        max_connections=max_connections,
    )


def write_functions(path: Path, functions: Mapping[str, Callable[..., Any]]) -> str:
    """Pickle ``{name: callable}`` for the gateway's function callers; return the path."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(cloudpickle.dumps(dict(functions)))
    return str(path)


class Puma:
    """A running PUMA deployment: Redis, master and workers, gateway, Envoy."""

    def __init__(
        self, config: Mapping[str, Any], services: Mapping[str, dict[str, Callable[..., Any]]]
    ) -> None:
        routes: dict[str, str] = dict(config.get("puma_services") or {})
        for name in services:
            routes.setdefault(name, f"/{name}")
        missing = sorted(set(routes) - set(services))
        if missing:
            raise ConfigError(f"puma_services without a registered function: {missing}")
        if not routes:
            raise ConfigError("no services: call puma_service({name: callable}) first")
        self.config = dict(config)
        self.routes = routes
        self.services = dict(services)
        self.workdir = Path(tempfile.mkdtemp(prefix="palm-puma-"))
        self._stack: list[Callable[[], None]] = []
        self.redis_url: str | None = None
        self.cluster: LocalCluster | None = None
        self.gateway: GatewayServer | None = None
        self.edge: EnvoyProcess | None = None

    def start(self) -> Puma:
        self.workdir.mkdir(parents=True, exist_ok=True)  # (again, after a stop)
        try:
            self._start()
        except BaseException:
            self.stop()
            raise
        return self

    def _start(self) -> None:
        conf = self.config
        self.redis_url = conf.get("redis")
        if self.redis_url is None:
            embedded = EmbeddedRedis(data_dir=self.workdir / "redis")
            self.redis_url = embedded.start()
            self._stack.append(embedded.stop)

        # the workers find the deployment's Redis (shared state for the functions) there
        cluster = LocalCluster(
            workers=int(conf.get("workers") or 2),
            name="puma",
            env={"PALM_REDIS_URL": self.redis_url} if self.redis_url else None,
        )
        self._stack.append(cluster.stop)
        cluster.start()
        self.cluster = cluster

        gateway_services: dict[str, Any] = {}
        for name, functions in self.services.items():
            gateway_services[name] = {
                "kind": "function",
                "push_address": cluster.addresses["push"],
                "pull_address": cluster.addresses["pull"],
                "db_address": cluster.addresses["db"],
                "server_name": cluster.name,
                "functions_path": write_functions(
                    self.workdir / "functions" / f"{name}.pkl", functions
                ),
            }
        hcm = conf.get("http_connection_manager") or {}
        route_timeout_s = float(hcm.get("route_timeout_s", 60.0))
        gateway = GatewayServer(
            {
                "services": gateway_services,
                "redis_url": self.redis_url,
                "timeout_s": route_timeout_s,
                # PUMA is a notebook's local edge; conf["auth"] = "api_keys" checks keys
                "auth": conf.get("auth", "open"),
            },
            workers=int(conf.get("gateway_workers") or 2),
            threads=int(conf.get("gateway_threads") or 32),
            workdir=self.workdir / "gateway",
            env={"PALM_SECRET": cluster.secret},  # functions travel signed
        )
        self._stack.append(gateway.stop)
        gateway.start()
        self.gateway = gateway

        names = {
            "connect_timeout_s": "connect_s",
            "stream_idle_timeout_s": "stream_idle_s",
            "request_timeout_s": "request_s",
            "drain_timeout_s": "drain_s",
            "idle_timeout_s": "downstream_idle_s",
        }
        timeouts = {field: float(hcm[key]) for key, field in names.items() if key in hcm}
        timeouts["route_s"] = route_timeout_s
        logging_conf = conf.get("logging") or {}
        edge = EnvoyProcess(
            edge_config(
                self.routes,
                (gateway.address,),
                port=int(hcm.get("port", 0)),
                load_balancer=conf.get("load_balancer", "round_robin"),
                rate_limit=conf.get("rate_limit"),
                circuit_breakers=conf.get("circuit_breakers"),
                timeouts=timeouts,
                access_log=logging_conf.get("access_log", str(self.workdir / "access.log")),
            ),
            workdir=self.workdir / "envoy",
        )
        self._stack.append(edge.stop)
        edge.start()
        self.edge = edge

    @property
    def url(self) -> str:
        if self.edge is None:
            raise ConfigError("PUMA is not running")
        return self.edge.url

    def urls(self) -> dict[str, str]:
        """The public URL of every service function, plus the gateway's own pages."""
        if self.edge is None or self.gateway is None or self.edge.admin_address is None:
            raise ConfigError("PUMA is not running")
        found = {
            f"{name}.{fn}": f"{self.url}{self.routes[name]}/{fn}"
            for name, functions in self.services.items()
            for fn in functions
        }
        found["map"] = f"{self.url}/map/<service>/<function>"
        found["gateway metrics"] = f"{self.gateway.url}/metrics"
        host, port = self.edge.admin_address
        found["envoy admin"] = f"http://{host}:{port}"
        return found

    def print_urls(self, out: TextIO | None = None) -> None:
        out = out or sys.stdout
        print(f"PUMA edge listening at {self.url}", file=out)
        for what, url in self.urls().items():
            print(f"  {what}: {url}", file=out)
        out.flush()

    def map(self, function: Callable[[Any], Any], data: Iterable[Any]) -> list[Any]:
        if self.cluster is None:
            raise ConfigError("PUMA is not running")
        items = list(data)
        chunksize = max(1, math.isqrt(len(items)))
        return self.cluster.map(function, items, chunksize=chunksize)

    def stop(self) -> None:
        """Stop every process started, newest first, then remove the work directory."""
        while self._stack:
            stop = self._stack.pop()
            try:
                stop()
            except Exception as exc:  # keep stopping the rest
                print(f"PUMA: error while stopping: {exc!r}", file=sys.stderr)
        shutil.rmtree(self.workdir, ignore_errors=True)

    def __enter__(self) -> Puma:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
