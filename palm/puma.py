"""PUMA: put Python functions behind an Envoy edge in four calls.

::

    from palm.puma import puma_config, puma_service, puma_start

    def sentiment(body: bytes) -> dict:
        return {"positive": b"good" in body}

    puma_config({"puma_services": {"sentiment": "/sentiment"}, "load_balancer": "least_request"})
    puma_service({"sentiment": sentiment})
    puma_start()   # POST http://127.0.0.1:<port>/sentiment/call until Ctrl-C

``puma_config(conf)`` takes a dict or a JSON string with the keys

``puma_services``
    ``{service: route}``: the public route prefix of each service.
``load_balancer``
    ``round_robin`` (default), ``least_request``, ``ring_hash``, ``maglev``,
    ``random``.
``rate_limit``
    ``{"max_tokens", "tokens_per_fill", "fill_interval_s"}``: Envoy's local
    token bucket; past it requests get 429 with ``x-envoy-ratelimited``.
``logging``
    ``{"access_log": path | "-" | null}`` (``"-"``: stdout).
``http_connection_manager``
    ``{"port", "route_timeout_s", "idle_timeout_s", "stream_idle_timeout_s",
    "request_timeout_s", "drain_timeout_s", "connect_timeout_s"}``; ``port``
    0 (default) lets the OS choose.
``redis``
    a Redis URL (or ``{"url": ...}``); without it an embedded redis-server
    is started and stopped with the rest.
``workers``, ``gateway_workers``, ``circuit_breakers``
    pool sizes and Envoy's circuit breaker thresholds.

``puma_service({name: callable})`` registers Python callables; a service may
also map function names to callables (``{name: {"fn": callable}}``). A bare
callable is served as function ``call``: ``POST <route>/call`` hands it the
request body (bytes) and answers its result (bytes as they are, ``str`` as
UTF-8, anything else as JSON); ``POST /map/<service>/call`` with a JSON array
applies it to each item. Callables travel with cloudpickle to generic function
workers. Source code strings are refused: palm never ``exec``\\ s text.

``puma_start()`` starts Redis (unless configured), the master and its worker
pool, the gateway and Envoy, prints the URLs, and blocks until SIGINT or
SIGTERM; then it stops every process it started. ``puma_start(block=False)``
returns the running :class:`Puma` instead (stop it with ``.stop()``).

``await puma_map(function, data)`` maps a function over data on the running
deployment's workers (or on a temporary local cluster when none runs here).
"""

from __future__ import annotations

import asyncio
import json
import math
import signal
import sys
import tempfile
import threading
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import Any, TextIO

from palm.errors import ConfigError

__all__ = [
    "CONFIG_KEYS",
    "Puma",
    "puma_config",
    "puma_map",
    "puma_service",
    "puma_start",
]

CONFIG_KEYS = frozenset(
    {
        "puma_services",
        "load_balancer",
        "rate_limit",
        "logging",
        "http_connection_manager",
        "redis",
        "workers",
        "gateway_workers",
        "circuit_breakers",
    }
)
HCM_KEYS = {
    "port",
    "route_timeout_s",
    "idle_timeout_s",
    "stream_idle_timeout_s",
    "request_timeout_s",
    "drain_timeout_s",
    "connect_timeout_s",
}
DEFAULT_FUNCTION = "call"


@dataclass
class _Registry:
    config: dict[str, Any] = field(default_factory=dict)
    services: dict[str, dict[str, Callable[..., Any]]] = field(default_factory=dict)
    running: Puma | None = None


_registry = _Registry()


def _seconds(value: Any, key: str) -> float:
    """A duration given as a number of seconds or as Envoy text ("5s", "250ms")."""
    if isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    if isinstance(value, str):
        text = value.strip()
        try:
            if text.endswith("ms"):
                return float(text[:-2]) / 1000
            if text.endswith("s"):
                return float(text[:-1])
            return float(text)
        except ValueError:
            pass
    raise ConfigError(f"{key} must be a number of seconds or a duration like '5s', not {value!r}")


def _mapping(conf: Mapping[str, Any], key: str, allowed: set[str]) -> dict[str, Any]:
    value = conf.get(key) or {}
    if not isinstance(value, dict):
        raise ConfigError(f"{key} must be a mapping")
    unknown = set(value) - allowed
    if unknown:
        raise ConfigError(f"unknown {key} keys {sorted(unknown)}; known: {sorted(allowed)}")
    return value


def puma_config(conf: Mapping[str, Any] | str) -> dict[str, Any]:
    """Set the deployment's configuration (a dict or a JSON string); return it."""
    if isinstance(conf, str):
        try:
            conf = json.loads(conf)
        except ValueError as exc:
            raise ConfigError(f"puma_config: not valid JSON: {exc}") from exc
    if not isinstance(conf, Mapping):
        raise ConfigError("puma_config takes a mapping or a JSON object")
    unknown = set(conf) - CONFIG_KEYS
    if unknown:
        raise ConfigError(
            f"unknown puma_config keys {sorted(unknown)}; known: {sorted(CONFIG_KEYS)}"
        )
    checked = dict(conf)
    services = checked.get("puma_services") or {}
    if not isinstance(services, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in services.items()
    ):
        raise ConfigError("puma_services must map service names to route prefixes like '/name'")
    from gateway.envoy_config import LB_POLICIES, check_service

    for name, route in services.items():
        check_service(name, route.rstrip("/") or route)
    checked["puma_services"] = {name: route.rstrip("/") for name, route in services.items()}
    policy = checked.setdefault("load_balancer", "round_robin")
    if policy not in LB_POLICIES:
        raise ConfigError(f"load_balancer must be one of {sorted(LB_POLICIES)}, not {policy!r}")
    _mapping(checked, "rate_limit", {"max_tokens", "tokens_per_fill", "fill_interval_s"})
    _mapping(checked, "logging", {"access_log"})
    hcm = _mapping(checked, "http_connection_manager", HCM_KEYS)
    for key, value in hcm.items():
        if key != "port":
            hcm[key] = _seconds(value, f"http_connection_manager.{key}")
    _mapping(
        checked,
        "circuit_breakers",
        {"max_connections", "max_pending_requests", "max_requests", "max_retries"},
    )
    redis = checked.get("redis")
    if isinstance(redis, dict):
        redis = redis.get("url")
    if redis is not None and not isinstance(redis, str):
        raise ConfigError("redis must be a URL or {'url': URL}")
    checked["redis"] = redis
    _registry.config = checked
    return checked


def puma_service(services: Mapping[str, Any] | str) -> None:
    """Register Python callables: ``{service: callable}`` or ``{service: {fn: callable}}``."""
    if isinstance(services, str) or not isinstance(services, Mapping):
        raise ConfigError(
            "puma_service takes a mapping of service names to Python callables; "
            "source code (strings, JSON) is not accepted: palm never executes text"
        )
    registered: dict[str, dict[str, Callable[..., Any]]] = {}
    for name, target in services.items():
        functions = target if isinstance(target, Mapping) else {DEFAULT_FUNCTION: target}
        for fn_name, fn in functions.items():
            if isinstance(fn, str | bytes):
                raise ConfigError(
                    f"puma_service: {name}.{fn_name} is a string; pass the Python callable "
                    "itself (palm ships it with cloudpickle and never executes source text)"
                )
            if not callable(fn):
                raise ConfigError(f"puma_service: {name}.{fn_name} is not callable")
        registered[name] = dict(functions)
    _registry.services.update(registered)


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
        self.cluster: Any = None
        self.gateway: Any = None
        self.edge: Any = None

    def start(self) -> Puma:
        try:
            self._start()
        except BaseException:
            self.stop()
            raise
        return self

    def _start(self) -> None:
        import cloudpickle

        from gateway.envoy_config import CircuitBreakers, EdgeConfig, RateLimit, Timeouts
        from gateway.envoy_process import EnvoyProcess
        from gateway.serve import GatewayServer
        from palm.cluster import LocalCluster

        conf = self.config
        self.redis_url = conf.get("redis")
        if self.redis_url is None:
            from palm.redis_server import EmbeddedRedis

            embedded = EmbeddedRedis(data_dir=self.workdir / "redis")
            self.redis_url = embedded.start()
            self._stack.append(embedded.stop)

        cluster = LocalCluster(workers=int(conf.get("workers") or 2), name="puma")
        cluster.__enter__()
        self.cluster = cluster
        self._stack.append(lambda: cluster.__exit__(None, None, None))

        functions_dir = self.workdir / "functions"
        functions_dir.mkdir()
        gateway_services: dict[str, Any] = {}
        for name, functions in self.services.items():
            path = functions_dir / f"{name}.pkl"
            path.write_bytes(cloudpickle.dumps(functions))
            gateway_services[name] = {
                "kind": "function",
                "push_address": cluster.addresses["push"],
                "pull_address": cluster.addresses["pull"],
                "db_address": cluster.addresses["db"],
                "server_name": cluster.name,
                "functions_path": str(path),
            }
        hcm = conf.get("http_connection_manager") or {}
        route_timeout_s = float(hcm.get("route_timeout_s", 60.0))
        gateway = GatewayServer(
            {
                "services": gateway_services,
                "redis_url": self.redis_url,
                "timeout_s": route_timeout_s,
            },
            workers=int(conf.get("gateway_workers") or 2),
            workdir=self.workdir / "gateway",
            env={"PALM_SECRET": cluster.secret},  # functions travel signed
        )
        self._stack.append(gateway.stop)
        gateway.start()
        self.gateway = gateway

        defaults = Timeouts()
        timeouts = Timeouts(
            connect_s=hcm.get("connect_timeout_s", defaults.connect_s),
            route_s=route_timeout_s,
            stream_idle_s=hcm.get("stream_idle_timeout_s", defaults.stream_idle_s),
            request_s=hcm.get("request_timeout_s", defaults.request_s),
            drain_s=hcm.get("drain_timeout_s", defaults.drain_s),
            downstream_idle_s=hcm.get("idle_timeout_s", defaults.downstream_idle_s),
        )
        logging_conf = conf.get("logging") or {}
        edge_config = EdgeConfig(
            services=self.routes,
            gateways=(gateway.address,),
            listen_port=int(hcm.get("port", 0)),
            lb_policy=conf.get("load_balancer", "round_robin"),
            rate_limit=RateLimit(**(conf.get("rate_limit") or {})),
            circuit_breakers=CircuitBreakers(**(conf.get("circuit_breakers") or {})),
            timeouts=timeouts,
            access_log=logging_conf.get("access_log", str(self.workdir / "access.log")),
        )
        edge = EnvoyProcess(edge_config, workdir=self.workdir / "envoy")
        self._stack.append(edge.stop)
        edge.start()
        self.edge = edge

    @property
    def url(self) -> str:
        if self.edge is None:
            raise ConfigError("PUMA is not running")
        url: str = self.edge.url
        return url

    def urls(self) -> dict[str, str]:
        """The public URL of every service function, plus the gateway's own pages."""
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

    def print_urls(self, out: TextIO = sys.stdout) -> None:
        print(f"PUMA edge listening at {self.url}", file=out)
        for what, url in self.urls().items():
            print(f"  {what}: {url}", file=out)
        out.flush()

    def map(self, function: Callable[[Any], Any], data: Iterable[Any]) -> list[Any]:
        items = list(data)
        chunksize = max(1, math.isqrt(len(items)))
        result: list[Any] = self.cluster.map(function, items, chunksize=chunksize)
        return result

    def stop(self) -> None:
        """Stop every process started, newest first."""
        while self._stack:
            stop = self._stack.pop()
            try:
                stop()
            except Exception as exc:  # keep stopping the rest
                print(f"PUMA: error while stopping: {exc!r}", file=sys.stderr)
        if _registry.running is self:
            _registry.running = None

    def __enter__(self) -> Puma:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def puma_start(*, block: bool = True) -> Puma:
    """Start the deployment; block until SIGINT/SIGTERM unless ``block`` is False."""
    puma = Puma(_registry.config, _registry.services).start()
    _registry.running = puma
    puma.print_urls()
    if not block:
        return puma
    stop = threading.Event()

    def request_stop(signum: int, _frame: FrameType | None) -> None:
        stop.set()

    previous = {sig: signal.signal(sig, request_stop) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        while not stop.wait(0.5):
            pass
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        puma.stop()
        print("PUMA stopped", flush=True)
    return puma


async def puma_map(function: Callable[[Any], Any], data: Iterable[Any]) -> list[Any]:
    """``map(function, data)`` on palm workers; results in order.

    Uses the deployment started with ``puma_start(block=False)`` in this
    process, or else a temporary local cluster for this one call.
    """
    items = list(data)
    running = _registry.running
    if running is not None:
        return await asyncio.to_thread(running.map, function, items)

    def run_locally() -> list[Any]:
        from palm.cluster import LocalCluster

        workers = int(_registry.config.get("workers") or 2)
        with LocalCluster(workers=workers, name="puma-map") as cluster:
            chunksize = max(1, math.isqrt(len(items)))
            result: list[Any] = cluster.map(function, items, chunksize=chunksize)
            return result

    return await asyncio.to_thread(run_locally)
