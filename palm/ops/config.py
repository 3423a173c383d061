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
from palm.ops.schema import (
    ENDPOINTS,
    KINDS,
    LB_POLICIES,
    RESERVED_NAMES,
    DepsShape,
    check_imports,
    check_shape,
    route_problems,
)

__all__ = [
    "AUTH_MODES",
    "ENDPOINTS",
    "KINDS",
    "LB_POLICIES",
    "RESERVED_NAMES",
    "DeploymentConfig",
    "EdgeSettings",
    "ServiceConfig",
    "check_route",
    "deps_arguments",
    "import_targets",
    "load_deployment",
    "parse_deployment",
]

FUNCTION_WORKER = "palm.serve.worker:FunctionWorker"
#: How the gateway checks its callers (:mod:`palm.gateway.auth`).
AUTH_MODES = ("api_keys", "open")


def check_route(name: str, route: str) -> None:
    """A service name and its public route prefix (``/name``) must be usable."""
    problems = route_problems(name, route)
    if problems:
        raise ConfigError(problems[0])


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


def parse_deployment(raw: Any, path: Path | None = None) -> DeploymentConfig:
    """Check a deployment mapping (as loaded from YAML) and return it typed.

    Every problem is reported at once, in one :class:`ConfigError` whose lines
    start with their key paths (:func:`palm.ops.schema.check_shape`).
    """
    top, edge_shape, shapes = check_shape(raw)
    services = {
        name: ServiceConfig(
            name=name,
            kind=shape.kind,
            route=(shape.route or f"/{name}").rstrip("/") or "/",
            port=shape.port or 0,
            server=shape.server if shape.kind == "standalone" else None,
            worker=shape.worker if shape.kind == "parallel" else None,
            functions=dict(shape.functions or {}) if shape.kind == "function" else {},
            workers=shape.workers,
            example=shape.example,
            page=shape.page,
            deps_arguments=deps_arguments(shape.install_deps),
        )
        for name, shape in shapes.items()
    }
    route_s = edge_shape.route_timeout_s
    edge = EdgeSettings(
        port=edge_shape.port,
        load_balancer=edge_shape.load_balancer,
        rate_limit=(
            edge_shape.rate_limit.model_dump(exclude_unset=True) if edge_shape.rate_limit else {}
        ),
        route_timeout_s=route_s,
        access_log=edge_shape.access_log,
        gateway_workers=edge_shape.gateway_workers,
        gateway_threads=edge_shape.gateway_threads,
        auth=edge_shape.auth,
        request_headers_timeout_s=edge_shape.request_headers_timeout_s,
        stream_idle_timeout_s=edge_shape.stream_idle_timeout_s or route_s + 30.0,
        connection_idle_timeout_s=edge_shape.connection_idle_timeout_s,
        max_connections=edge_shape.max_connections,
    )
    keys = top.keys
    if keys is not None and path is not None:
        keys = str((path.parent / keys).resolve())
    return DeploymentConfig(
        name=top.name,
        services=services,
        redis=top.redis or None,
        host=top.host or "127.0.0.1",
        keys=keys,
        edge=edge,
        path=path,
        notes=tuple(top.notes or ()),
    )


def deps_arguments(shape: DepsShape | None) -> tuple[str, ...]:
    """``palm worker`` options from a service's checked ``install_deps`` (None: off)."""
    if shape is None:
        return ()
    out = ["--install-deps"]
    for link in shape.find_links or ():
        out += ["--find-links", link]
    if shape.index_url is not None:
        out += ["--index-url", shape.index_url]
    if shape.cache is not None:
        out += ["--deps-cache", shape.cache]
    if shape.no_index:
        out.append("--no-index")
    if shape.max_envs is not None:
        out += ["--deps-max-envs", str(shape.max_envs)]
    return tuple(out)


def import_targets(config: DeploymentConfig) -> dict[str, tuple[str, type | None]]:
    """Every class and function the file names, by key path, with the class each
    must subclass (None: a function)."""
    from palm.serve.server import Server
    from palm.serve.worker import Worker

    targets: dict[str, tuple[str, type | None]] = {}
    for name, service in config.services.items():
        if service.server:
            targets[f"services.{name}.server"] = (service.server, Server)
        if service.worker:
            targets[f"services.{name}.worker"] = (service.worker, Worker)
        for fn, spec in service.functions.items():
            targets[f"services.{name}.functions.{fn}"] = (spec, None)
    return targets


def load_deployment(path: str | Path, *, imports: bool = False) -> DeploymentConfig:
    """Read and check a deployment file; with ``imports``, also import every class
    and function it names (from the file's folder), reporting every failure."""
    file = Path(path)
    try:
        raw = yaml.safe_load(file.read_text())
    except OSError as exc:
        raise ConfigError(f"cannot read {file}: {exc}") from exc
    except yaml.YAMLError as exc:
        raise ConfigError(f"{file} is not valid YAML: {exc}") from exc
    config = parse_deployment(raw, file.resolve())
    if imports:
        check_imports(import_targets(config), file.resolve().parent)
    return config
