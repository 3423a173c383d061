"""Render the Envoy configuration of the palm HTTP edge.

The templates live in the ``envoy/`` folder beside this module (YAML loaded with
PyYAML); :func:`render` fills them from an :class:`EdgeConfig` and returns plain
dicts. :func:`write_xds` writes the four files Envoy reads:

``bootstrap.yaml``
    admin on 127.0.0.1 (port chosen by the OS) and ``dynamic_resources`` whose
    ``lds_config`` / ``cds_config`` are ``path_config_source`` files in a
    watched directory.
``lds.yaml``
    the listener (HTTP connection manager, local rate limit, access log); its
    routes come from ``rds.yaml``.
``rds.yaml``
    one route per service: ``<prefix>/`` rewritten to ``/<service>/`` on the
    gateway cluster, plus the gateway's own ``/jobs/``, ``/map/``, ``/healthz``,
    ``/metrics`` and ``/dashboard`` paths.
``cds.yaml``
    the gateway cluster: endpoints, LB policy, active health check on
    ``/healthz``, circuit breakers.

Every xDS file is replaced atomically (a temporary file in the same
directory, then ``os.rename``), which is what makes Envoy reload it.
"""

from __future__ import annotations

import copy
import ipaddress
import json
import os
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import yaml

from palm.errors import ConfigError

__all__ = [
    "LB_POLICIES",
    "TEMPLATE_DIR",
    "CircuitBreakers",
    "EdgeConfig",
    "HealthCheck",
    "RateLimit",
    "Timeouts",
    "XdsPaths",
    "render",
    "write_atomic",
    "write_xds",
]

TEMPLATE_DIR = Path(__file__).resolve().parent / "envoy"

LB_POLICIES: dict[str, str] = {
    "round_robin": "ROUND_ROBIN",
    "least_request": "LEAST_REQUEST",
    "ring_hash": "RING_HASH",
    "maglev": "MAGLEV",
    "random": "RANDOM",
}

LISTENER_TYPE = "type.googleapis.com/envoy.config.listener.v3.Listener"
CLUSTER_TYPE = "type.googleapis.com/envoy.config.cluster.v3.Cluster"
ROUTES_TYPE = "type.googleapis.com/envoy.config.route.v3.RouteConfiguration"
FILE_LOG_TYPE = "type.googleapis.com/envoy.extensions.access_loggers.file.v3.FileAccessLog"
STDOUT_LOG_TYPE = "type.googleapis.com/envoy.extensions.access_loggers.stream.v3.StdoutAccessLog"

# Paths the gateway serves for every service (service names, not public prefixes),
# its Prometheus metrics and the live dashboard (its page, files and data).
GATEWAY_PATHS = ("/jobs/", "/map/", "/healthz", "/metrics", "/dashboard", "/dashboard/")


@dataclass(frozen=True)
class RateLimit:
    """A token bucket shared by the whole listener (per Envoy process)."""

    max_tokens: int = 1000
    tokens_per_fill: int = 1000
    fill_interval_s: float = 1.0


@dataclass(frozen=True)
class CircuitBreakers:
    max_connections: int = 1024
    max_pending_requests: int = 1024
    max_requests: int = 1024
    max_retries: int = 3


@dataclass(frozen=True)
class HealthCheck:
    interval_s: float = 0.5
    timeout_s: float = 0.5
    unhealthy_threshold: int = 1
    healthy_threshold: int = 1


@dataclass(frozen=True)
class Timeouts:
    connect_s: float = 0.25
    route_s: float = 60.0
    stream_idle_s: float = 300.0
    request_s: float = 0.0  # 0 disables the downstream request timeout
    #: a client must have sent all its request headers this long after its first byte
    request_headers_s: float = 10.0
    drain_s: float = 5.0
    downstream_idle_s: float = 3600.0
    upstream_idle_s: float = 1.0


@dataclass(frozen=True)
class EdgeConfig:
    """Everything the edge's Envoy configuration depends on.

    ``services`` maps a palm service name to its public route prefix
    (``{"echo": "/echo"}``); ``gateways`` are the ``(host, port)`` pairs of the
    gateway processes. ``access_log`` is a file path, ``"-"`` for stdout, or
    ``None`` for no access log. ``listen_port`` 0 lets the OS choose.
    """

    services: Mapping[str, str]
    gateways: tuple[tuple[str, int], ...]
    listen_address: str = "127.0.0.1"
    listen_port: int = 0
    lb_policy: str = "round_robin"
    rate_limit: RateLimit = field(default_factory=RateLimit)
    circuit_breakers: CircuitBreakers = field(default_factory=CircuitBreakers)
    health_check: HealthCheck = field(default_factory=HealthCheck)
    timeouts: Timeouts = field(default_factory=Timeouts)
    num_retries: int = 2
    access_log: str | None = "-"
    node_id: str = "palm-edge"
    #: downstream connections Envoy holds at once (overload manager); more are refused
    max_connections: int = 10000

    def __post_init__(self) -> None:
        if self.lb_policy not in LB_POLICIES:
            raise ConfigError(
                f"unknown load balancer {self.lb_policy!r}; expected one of {sorted(LB_POLICIES)}"
            )
        if not self.gateways:
            raise ConfigError("the edge needs at least one gateway address")
        for name, prefix in self.services.items():
            check_service(name, prefix)
        if self.rate_limit.max_tokens < 1 or self.rate_limit.tokens_per_fill < 1:
            raise ConfigError("rate limit tokens must be positive")
        if self.max_connections < 1:
            raise ConfigError("max_connections must be at least 1")
        if self.timeouts.request_headers_s <= 0:
            raise ConfigError("the request headers timeout must be positive")
        if self.rate_limit.fill_interval_s < 0.001:
            raise ConfigError("rate limit fill interval must be at least 1 ms")

    def with_service(self, name: str, prefix: str) -> EdgeConfig:
        return replace(self, services={**self.services, name: prefix})


def check_service(name: str, prefix: str) -> None:
    if not name or "/" in name or name in {"jobs", "map", "healthz", "metrics", "dashboard"}:
        raise ConfigError(f"bad service name {name!r}")
    if not prefix.startswith("/") or prefix == "/" or prefix.endswith("/"):
        raise ConfigError(f"route prefix for {name!r} must look like '/name', not {prefix!r}")
    if prefix.rstrip("/") + "/" in GATEWAY_PATHS:
        raise ConfigError(f"route prefix {prefix!r} is reserved by the gateway")


@dataclass(frozen=True)
class XdsPaths:
    """Where the edge's files live: all in one watched directory."""

    directory: Path

    @property
    def bootstrap(self) -> Path:
        return self.directory / "bootstrap.yaml"

    @property
    def lds(self) -> Path:
        return self.directory / "lds.yaml"

    @property
    def cds(self) -> Path:
        return self.directory / "cds.yaml"

    @property
    def rds(self) -> Path:
        return self.directory / "rds.yaml"


def duration(seconds: float) -> str:
    """An Envoy duration string ("0.25s")."""
    return f"{seconds:.3f}".rstrip("0").rstrip(".") + "s"


def load_template(name: str) -> dict[str, Any]:
    path = TEMPLATE_DIR / name
    try:
        data = yaml.safe_load(path.read_text())
    except OSError as exc:
        raise ConfigError(f"cannot read Envoy template {path}") from exc
    if not isinstance(data, dict):
        raise ConfigError(f"Envoy template {path} is not a mapping")
    return data


def path_source(path: Path) -> dict[str, Any]:
    return {
        "resource_api_version": "V3",
        "path_config_source": {
            "path": str(path),
            "watched_directory": {"path": str(path.parent)},
        },
    }


def render_bootstrap(config: EdgeConfig, paths: XdsPaths) -> dict[str, Any]:
    boot = load_template("bootstrap.yaml")
    boot["node"]["id"] = config.node_id
    boot["dynamic_resources"]["lds_config"] = path_source(paths.lds)
    boot["dynamic_resources"]["cds_config"] = path_source(paths.cds)
    monitor = boot["overload_manager"]["resource_monitors"][0]["typed_config"]
    monitor["max_active_downstream_connections"] = config.max_connections
    return boot


def access_logs(target: str | None) -> list[dict[str, Any]]:
    if target is None:
        return []
    if target == "-":
        return [{"name": "envoy.access_loggers.stdout", "typed_config": {"@type": STDOUT_LOG_TYPE}}]
    return [
        {
            "name": "envoy.access_loggers.file",
            "typed_config": {"@type": FILE_LOG_TYPE, "path": target},
        }
    ]


def render_listener(config: EdgeConfig, paths: XdsPaths) -> dict[str, Any]:
    listener = load_template("listener.yaml")
    sock = listener["address"]["socket_address"]
    sock["address"] = config.listen_address
    sock["port_value"] = config.listen_port
    hcm = listener["filter_chains"][0]["filters"][0]["typed_config"]
    t = config.timeouts
    hcm["stream_idle_timeout"] = duration(t.stream_idle_s)
    hcm["request_timeout"] = duration(t.request_s)
    hcm["request_headers_timeout"] = duration(t.request_headers_s)
    hcm["drain_timeout"] = duration(t.drain_s)
    hcm["common_http_protocol_options"]["idle_timeout"] = duration(t.downstream_idle_s)
    hcm["rds"]["config_source"] = path_source(paths.rds)
    hcm["access_log"] = access_logs(config.access_log)
    limit = hcm["http_filters"][0]["typed_config"]
    limit["token_bucket"] = {
        "max_tokens": config.rate_limit.max_tokens,
        "tokens_per_fill": config.rate_limit.tokens_per_fill,
        "fill_interval": duration(config.rate_limit.fill_interval_s),
    }
    return listener


def render_cluster(config: EdgeConfig) -> dict[str, Any]:
    cluster = load_template("cluster.yaml")
    cluster["connect_timeout"] = duration(config.timeouts.connect_s)
    cluster["lb_policy"] = LB_POLICIES[config.lb_policy]
    if not all(_is_ip(host) for host, _ in config.gateways):
        # host names (docker-compose service names) are resolved by Envoy
        cluster["type"] = "STRICT_DNS"
        cluster["dns_lookup_family"] = "V4_ONLY"
    cluster["load_assignment"]["endpoints"][0]["lb_endpoints"] = [
        {"endpoint": {"address": {"socket_address": {"address": host, "port_value": port}}}}
        for host, port in config.gateways
    ]
    options = cluster["typed_extension_protocol_options"]
    http = options["envoy.extensions.upstreams.http.v3.HttpProtocolOptions"]
    http["common_http_protocol_options"]["idle_timeout"] = duration(config.timeouts.upstream_idle_s)
    hc = config.health_check
    check = cluster["health_checks"][0]
    check["timeout"] = duration(hc.timeout_s)
    check["interval"] = duration(hc.interval_s)
    check["no_traffic_interval"] = duration(hc.interval_s)
    check["unhealthy_threshold"] = hc.unhealthy_threshold
    check["healthy_threshold"] = hc.healthy_threshold
    cb = config.circuit_breakers
    cluster["circuit_breakers"]["thresholds"][0].update(
        max_connections=cb.max_connections,
        max_pending_requests=cb.max_pending_requests,
        max_requests=cb.max_requests,
        max_retries=cb.max_retries,
    )
    return cluster


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


def render_routes(config: EdgeConfig) -> dict[str, Any]:
    template = load_template("routes.yaml")
    action: dict[str, Any] = template.pop("route_action")
    action["timeout"] = duration(config.timeouts.route_s)
    action["retry_policy"]["num_retries"] = config.num_retries
    action["retry_policy"]["per_try_timeout"] = duration(config.timeouts.route_s)
    if config.lb_policy in ("ring_hash", "maglev"):
        # Hash on the request id when there is one, else on the client address.
        action["hash_policy"] = [
            {"header": {"header_name": "x-palm-hash-key"}},
            {"connection_properties": {"source_ip": True}},
        ]
    routes: list[dict[str, Any]] = []
    # Longest prefixes first, so "/a/b" wins over "/a".
    for name, prefix in sorted(config.services.items(), key=lambda kv: -len(kv[1])):
        routed = copy.deepcopy(action)
        routed["prefix_rewrite"] = f"/{name}/"
        routes.append({"name": name, "match": {"prefix": f"{prefix}/"}, "route": routed})
    for path in GATEWAY_PATHS:
        match = {"prefix": path} if path.endswith("/") else {"path": path}
        name = path.strip("/") + ("-files" if path == "/dashboard/" else "")
        routes.append({"name": name, "match": match, "route": copy.deepcopy(action)})
    routes.append(unknown_route(config))
    template["virtual_hosts"][0]["routes"] = routes
    return template


def unknown_route(config: EdgeConfig) -> dict[str, Any]:
    """The last route: any other path is answered by Envoy itself with the gateway's
    JSON error shape (a 404 naming the services), not an empty body."""
    prefixes = ", ".join(sorted(config.services.values())) or "(none)"
    body = {
        "status": 404,
        "error": "unknown service",
        "detail": f"no service at this path; the services are at {prefixes}",
    }
    return {
        "name": "unknown",
        "match": {"prefix": "/"},
        "direct_response": {"status": 404, "body": {"inline_string": json.dumps(body)}},
        "response_headers_to_add": [
            {
                "header": {"key": "content-type", "value": "application/json"},
                "append_action": "OVERWRITE_IF_EXISTS_OR_ADD",
            }
        ],
    }


def discovery(type_url: str, resource: dict[str, Any], version: int) -> dict[str, Any]:
    return {"version_info": str(version), "resources": [{"@type": type_url, **resource}]}


def render(config: EdgeConfig, paths: XdsPaths, version: int = 1) -> dict[Path, dict[str, Any]]:
    """Every file of the edge, keyed by path (``bootstrap`` included)."""
    return {
        paths.bootstrap: render_bootstrap(config, paths),
        paths.lds: discovery(LISTENER_TYPE, render_listener(config, paths), version),
        paths.cds: discovery(CLUSTER_TYPE, render_cluster(config), version),
        paths.rds: discovery(ROUTES_TYPE, render_routes(config), version),
    }


def write_atomic(path: Path, data: Mapping[str, Any]) -> None:
    """Replace ``path`` with ``data`` as YAML: temporary file, fsync, rename."""
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as out:
            yaml.safe_dump(dict(data), out, sort_keys=False)
            out.flush()
            os.fsync(out.fileno())
        os.rename(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_xds(
    config: EdgeConfig,
    paths: XdsPaths,
    version: int = 1,
    *,
    only: tuple[str, ...] = ("bootstrap", "cds", "lds", "rds"),
) -> None:
    """Write the files named in ``only`` (clusters before the routes that use them)."""
    rendered = render(config, paths, version)
    for name in ("bootstrap", "cds", "lds", "rds"):
        if name in only:
            path: Path = getattr(paths, name)
            write_atomic(path, rendered[path])
