"""A deployment file (``palm.yaml``): the services of a cluster and its HTTP edge.

``palm up``, ``palm masters`` and the docker-compose services all read it::

    name: palm                 # deployment name (Redis key prefix)
    redis: null                # a Redis URL; null: an embedded redis-server
    host: 127.0.0.1            # where masters and servers bind (0.0.0.0 in containers)
    keys: null                 # CURVE keys directory (relative to this file); null: $PALM_KEYS
    edge:
      port: 8080               # Envoy's public port (0: the OS picks)
      load_balancer: round_robin
      rate_limit: {max_tokens: 1000, tokens_per_fill: 1000, fill_interval_s: 1}
      route_timeout_s: 60
      access_log: null         # a file, "-" for stdout, null for none
      gateway_workers: 2       # gunicorn processes of the gateway
      gateway_threads: 32      # threads in each for the Flask routes
      auth: api_keys           # api_keys (Bearer tokens) | open (local development only)
      request_headers_timeout_s: 10   # a client must send its headers within this
      stream_idle_timeout_s: 90       # a request with no bytes either way this long ends
      connection_idle_timeout_s: 60   # a connection with no request this long is closed
      max_connections: 10000          # downstream connections Envoy holds at once
    services:
      echo:                    # a standalone server
        kind: standalone
        server: palm.demo:DemoServer
        route: /echo
        port: 5570
      demo:                    # a master and a pool of workers of one class
        kind: parallel
        worker: palm.demo:DemoWorker
        workers: 2
        port: 5571             # five ports: pull, push, worker_pull, worker_push, db
      maths:                   # Python functions run by generic function workers
        kind: function
        functions: {factorial: "math:factorial"}
        workers: 2
        port: 5580

``port`` fixes where a service binds (what a multi-host deployment needs);
0 or no port lets the OS choose. ``route`` defaults to ``/<name>``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from palm.errors import ConfigError

__all__ = [
    "AUTH_MODES",
    "ENDPOINTS",
    "KINDS",
    "LB_POLICIES",
    "DeploymentConfig",
    "EdgeSettings",
    "ServiceConfig",
    "check_route",
    "deps_arguments",
    "load_deployment",
    "parse_deployment",
]

#: Envoy's load-balancing policies, by the names palm configurations use.
LB_POLICIES = ("round_robin", "least_request", "ring_hash", "maglev", "random")
#: Names and paths the gateway keeps for itself.
RESERVED_NAMES = frozenset({"jobs", "map", "healthz", "metrics", "dashboard"})
KINDS = ("standalone", "parallel", "function")
#: A master's endpoints, in the order of its ports (``port``, ``port + 1``, ...).
ENDPOINTS = ("pull", "push", "worker_pull", "worker_push", "db")
FUNCTION_WORKER = "palm.serve.worker:FunctionWorker"

_TOP_KEYS = {"name", "redis", "host", "keys", "edge", "services", "notes"}
_EDGE_KEYS = {
    "port",
    "load_balancer",
    "rate_limit",
    "route_timeout_s",
    "access_log",
    "gateway_workers",
    "gateway_threads",
    "auth",
    "request_headers_timeout_s",
    "stream_idle_timeout_s",
    "connection_idle_timeout_s",
    "max_connections",
}
#: How the gateway checks its callers (:mod:`palm.gateway.auth`).
AUTH_MODES = ("api_keys", "open")
_RATE_KEYS = {"max_tokens", "tokens_per_fill", "fill_interval_s"}
_SERVICE_KEYS = {"kind", "route", "port", "server", "worker", "functions", "workers", "example"}
_SERVICE_KEYS.add("page")  # a static page the gateway serves at <route>/
_SERVICE_KEYS.add("install_deps")  # environments on demand: see deps_arguments
_DEPS_KEYS = {"find_links", "index_url", "no_index", "cache", "max_envs"}


def check_route(name: str, route: str) -> None:
    """A service name and its public route prefix (``/name``) must be usable."""
    if not name or "/" in name or name in RESERVED_NAMES:
        raise ConfigError(f"bad service name {name!r}")
    if not route.startswith("/") or route == "/" or route.endswith("/"):
        raise ConfigError(f"route prefix for {name!r} must look like '/name', not {route!r}")
    if route.strip("/") in RESERVED_NAMES:
        raise ConfigError(f"route prefix {route!r} is reserved by the gateway")


@dataclass(frozen=True)
class ServiceConfig:
    """One service: a standalone server, or a master with a pool of workers."""

    name: str
    kind: str
    route: str
    port: int = 0
    server: str | None = None
    worker: str | None = None
    functions: Mapping[str, str] = field(default_factory=dict)
    workers: int = 2
    #: the body of the HTTP example ``palm up`` shows and ``--once`` sends;
    #: None: a default one; False: no HTTP example (a service for palm clients)
    example: str | bool | None = None
    #: ``package.module:directory`` of static files served at ``GET <route>/``
    page: str | None = None
    #: ``palm worker`` options for environments on demand (``install_deps``)
    deps_arguments: tuple[str, ...] = ()

    @property
    def worker_spec(self) -> str | None:
        """The ``package.module:Class`` of this service's workers (None: standalone)."""
        if self.kind == "function":
            return FUNCTION_WORKER
        return self.worker

    def bind_addresses(self, host: str, *, any_port: bool = False) -> dict[str, str]:
        """Where this service binds: the configured ports, or OS-chosen ones."""
        labels = ("address",) if self.kind == "standalone" else ENDPOINTS
        fixed = self.port and not any_port
        return {
            label: f"tcp://{host}:{self.port + i if fixed else '*'}"
            for i, label in enumerate(labels)
        }


@dataclass(frozen=True)
class EdgeSettings:
    port: int = 8080
    load_balancer: str = "round_robin"
    rate_limit: Mapping[str, float] = field(default_factory=dict)
    route_timeout_s: float = 60.0
    access_log: str | None = None
    gateway_workers: int = 2
    gateway_threads: int = 32
    #: "api_keys": callers need a key; "open": anyone (local development)
    auth: str = "api_keys"
    request_headers_timeout_s: float = 10.0
    #: default: route_timeout_s + 30 (a request waiting for its answer is idle)
    stream_idle_timeout_s: float = 90.0
    connection_idle_timeout_s: float = 60.0
    max_connections: int = 10000


def _seconds(value: Any, what: str) -> float:
    if isinstance(value, bool):
        raise ConfigError(f"{what} must be a number of seconds, not {value!r}")
    try:
        seconds = float(value)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"{what} must be a number of seconds, not {value!r}") from exc
    if not seconds > 0:
        raise ConfigError(f"{what} must be positive, not {value!r}")
    return seconds


@dataclass(frozen=True)
class DeploymentConfig:
    name: str
    services: Mapping[str, ServiceConfig]
    redis: str | None = None
    host: str = "127.0.0.1"
    #: the CURVE keys directory (absolute), or None: ``$PALM_KEYS`` or plain sockets
    keys: str | None = None
    edge: EdgeSettings = field(default_factory=EdgeSettings)
    path: Path | None = None
    #: lines ``palm up`` prints after its guide; ``{deployment}`` is the file
    #: describing the running services, ``{redis}`` the Redis URL
    notes: tuple[str, ...] = ()

    def routes(self) -> dict[str, str]:
        return {name: service.route for name, service in self.services.items()}


def _mapping(value: Any, what: str, allowed: set[str]) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise ConfigError(f"{what} must be a mapping")
    unknown = set(value) - allowed
    if unknown:
        raise ConfigError(f"unknown {what} keys {sorted(unknown)}; known: {sorted(allowed)}")
    return dict(value)


def _int(value: Any, what: str, minimum: int = 0) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ConfigError(f"{what} must be an integer >= {minimum}, not {value!r}")
    return value


def _spec(value: Any, what: str) -> str:
    if not isinstance(value, str) or ":" not in value:
        raise ConfigError(f"{what} must name an object as 'package.module:Name', not {value!r}")
    return value


def _service(name: str, raw: Any) -> ServiceConfig:
    data = _mapping(raw, f"services.{name}", _SERVICE_KEYS)
    kind = data.get("kind", "standalone")
    if kind not in KINDS:
        raise ConfigError(f"services.{name}.kind must be one of {list(KINDS)}, not {kind!r}")
    route = str(data.get("route") or f"/{name}").rstrip("/") or "/"
    check_route(name, route)
    port = _int(data.get("port") or 0, f"services.{name}.port")
    if port and port + len(ENDPOINTS) > 65536:
        raise ConfigError(f"services.{name}.port is too high")
    needs = {"standalone": "server", "parallel": "worker", "function": "functions"}[kind]
    if not data.get(needs):
        raise ConfigError(f"services.{name} ({kind}) needs '{needs}'")
    functions: dict[str, str] = {}
    if kind == "function":
        raw_functions = data["functions"]
        if not isinstance(raw_functions, Mapping):
            raise ConfigError(f"services.{name}.functions must map names to 'module:function'")
        functions = {
            str(fn): _spec(spec, f"services.{name}.functions.{fn}")
            for fn, spec in raw_functions.items()
        }
    return ServiceConfig(
        name=name,
        kind=kind,
        route=route,
        port=port,
        server=_spec(data["server"], f"services.{name}.server") if kind == "standalone" else None,
        worker=_spec(data["worker"], f"services.{name}.worker") if kind == "parallel" else None,
        functions=functions,
        workers=_int(data.get("workers", 2), f"services.{name}.workers"),
        example=_example(data.get("example"), f"services.{name}.example"),
        page=_spec(data["page"], f"services.{name}.page") if data.get("page") else None,
        deps_arguments=deps_arguments(data.get("install_deps"), f"services.{name}.install_deps"),
    )


def deps_arguments(value: Any, what: str = "install_deps") -> tuple[str, ...]:
    """``palm worker`` options from a service's ``install_deps``: absent or false,
    true, or a mapping of ``find_links`` (a list), ``index_url``, ``no_index``,
    ``cache`` and ``max_envs``."""
    if value is None or value is False:
        return ()
    if value is True:
        return ("--install-deps",)
    data = _mapping(value, what, _DEPS_KEYS)
    out = ["--install-deps"]
    links = data.get("find_links") or []
    if not isinstance(links, list) or not all(isinstance(x, str) for x in links):
        raise ConfigError(f"{what}.find_links must be a list of directories or URLs")
    for link in links:
        out += ["--find-links", link]
    for key in ("index_url", "cache"):
        if data.get(key) is not None:
            if not isinstance(data[key], str):
                raise ConfigError(f"{what}.{key} must be text")
            out += [f"--{'deps-cache' if key == 'cache' else 'index-url'}", data[key]]
    if data.get("no_index"):
        out.append("--no-index")
    if data.get("max_envs") is not None:
        out += ["--deps-max-envs", str(_int(data["max_envs"], f"{what}.max_envs", 1))]
    return tuple(out)


def _example(value: Any, what: str) -> str | bool | None:
    if value is None or value is False or isinstance(value, str):
        return value
    raise ConfigError(f"{what} must be a request body (text) or false")


def parse_deployment(raw: Any, path: Path | None = None) -> DeploymentConfig:
    """Check a deployment mapping (as loaded from YAML) and return it typed."""
    data = _mapping(raw, "deployment", _TOP_KEYS)
    services_raw = _mapping(data.get("services"), "services", set(data.get("services") or {}))
    if not services_raw:
        raise ConfigError("a deployment needs at least one service under 'services'")
    services = {str(name): _service(str(name), spec) for name, spec in services_raw.items()}
    ports: dict[int, str] = {}
    for service in services.values():
        if service.port:
            count = 1 if service.kind == "standalone" else len(ENDPOINTS)
            for port in range(service.port, service.port + count):
                if port in ports:
                    raise ConfigError(f"port {port} of {service.name!r} is {ports[port]!r}'s too")
                ports[port] = service.name
    edge_raw = _mapping(data.get("edge"), "edge", _EDGE_KEYS)
    policy = edge_raw.get("load_balancer", "round_robin")
    if policy not in LB_POLICIES:
        raise ConfigError(f"edge.load_balancer must be one of {list(LB_POLICIES)}, not {policy!r}")
    rate_limit = _mapping(edge_raw.get("rate_limit"), "edge.rate_limit", _RATE_KEYS)
    access_log = edge_raw.get("access_log")
    if access_log is not None and not isinstance(access_log, str):
        raise ConfigError("edge.access_log must be a path, '-' or null")
    try:
        route_timeout_s = float(edge_raw.get("route_timeout_s", 60.0))
    except (TypeError, ValueError) as exc:
        raise ConfigError("edge.route_timeout_s must be a number of seconds") from exc
    auth = edge_raw.get("auth", "api_keys")
    if auth not in AUTH_MODES:
        raise ConfigError(f"edge.auth must be one of {list(AUTH_MODES)}, not {auth!r}")
    headers_s = _seconds(
        edge_raw.get("request_headers_timeout_s", 10.0), "edge.request_headers_timeout_s"
    )
    idle_s = _seconds(
        edge_raw.get("stream_idle_timeout_s", route_timeout_s + 30.0), "edge.stream_idle_timeout_s"
    )
    if idle_s <= route_timeout_s:
        raise ConfigError(
            f"edge.stream_idle_timeout_s ({idle_s:g}) must exceed edge.route_timeout_s "
            f"({route_timeout_s:g}): a request waiting for its answer is idle"
        )
    edge = EdgeSettings(
        port=_int(edge_raw.get("port", 8080), "edge.port"),
        load_balancer=policy,
        rate_limit=rate_limit,
        route_timeout_s=route_timeout_s,
        access_log=access_log,
        gateway_workers=_int(edge_raw.get("gateway_workers", 2), "edge.gateway_workers", 1),
        gateway_threads=_int(edge_raw.get("gateway_threads", 32), "edge.gateway_threads", 1),
        auth=auth,
        request_headers_timeout_s=headers_s,
        stream_idle_timeout_s=idle_s,
        connection_idle_timeout_s=_seconds(
            edge_raw.get("connection_idle_timeout_s", 60.0), "edge.connection_idle_timeout_s"
        ),
        max_connections=_int(edge_raw.get("max_connections", 10000), "edge.max_connections", 1),
    )
    redis = data.get("redis")
    if redis is not None and not isinstance(redis, str):
        raise ConfigError("redis must be a URL or null")
    keys = data.get("keys")
    if keys is not None and (not isinstance(keys, str) or not keys):
        raise ConfigError("keys must be a directory (relative to the file) or null")
    if keys is not None and path is not None:
        keys = str((path.parent / keys).resolve())
    notes = data.get("notes") or []
    if not isinstance(notes, list) or not all(isinstance(n, str) for n in notes):
        raise ConfigError("notes must be a list of lines")
    return DeploymentConfig(
        name=str(data.get("name") or "palm"),
        services=services,
        redis=redis or None,
        host=str(data.get("host") or "127.0.0.1"),
        keys=keys,
        edge=edge,
        path=path,
        notes=tuple(notes),
    )


def load_deployment(path: str | Path) -> DeploymentConfig:
    """Read and check a deployment file."""
    file = Path(path)
    try:
        raw = yaml.safe_load(file.read_text())
    except OSError as exc:
        raise ConfigError(f"cannot read {file}: {exc}") from exc
    except yaml.YAMLError as exc:
        raise ConfigError(f"{file} is not valid YAML: {exc}") from exc
    return parse_deployment(raw, file.resolve())
