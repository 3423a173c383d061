"""The shape of a deployment file, checked with pydantic: every problem at once.

:func:`check_shape` validates the top level, the edge and each service on
their own, so a bad edge setting never hides a bad service; then it checks
what spans several keys (service names and routes, overlapping ports, the
stream idle timeout against the route timeout) on whatever was well-formed.
Each problem is one line that starts with its key path
(``services.demo.workers: ...``). :func:`check_imports` then imports every
class and function a checked file names.
"""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StrictBool,
    StrictInt,
    StrictStr,
    ValidationError,
)

from palm.errors import ConfigError

__all__ = [
    "ENDPOINTS",
    "KINDS",
    "LB_POLICIES",
    "RESERVED_NAMES",
    "DeploymentShape",
    "EdgeShape",
    "ServiceShape",
    "check_imports",
    "check_shape",
    "route_problems",
]

#: Envoy's load-balancing policies, by the names palm configurations use.
LB_POLICIES = ("round_robin", "least_request", "ring_hash", "maglev", "random")
#: Names and paths the gateway keeps for itself.
RESERVED_NAMES = frozenset({"jobs", "map", "healthz", "metrics", "dashboard"})
KINDS = ("standalone", "parallel", "function")
#: A master's endpoints, in the order of its ports (``port``, ``port + 1``, ...).
ENDPOINTS = ("pull", "push", "worker_pull", "worker_push", "db")


def _not_bool(value: Any) -> Any:
    if isinstance(value, bool):
        raise ValueError("must be a number, not a boolean")
    return value


def _spec(value: Any) -> Any:
    if isinstance(value, str):
        module, sep, name = value.partition(":")
        if sep and module and name:
            return value
    raise ValueError("must name an object as 'package.module:Name'")


Seconds = Annotated[float, BeforeValidator(_not_bool), Field(gt=0)]
Spec = Annotated[str, BeforeValidator(_spec)]
Port = Annotated[StrictInt, Field(ge=0, le=65535)]
Count = Annotated[StrictInt, Field(ge=1)]


class _Shape(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class RateLimitShape(_Shape):
    max_tokens: Annotated[float, BeforeValidator(_not_bool), Field(gt=0)] = 1000
    tokens_per_fill: Annotated[float, BeforeValidator(_not_bool), Field(gt=0)] = 1000
    fill_interval_s: Seconds = 1


class EdgeShape(_Shape):
    port: Port = 8080
    load_balancer: Literal["round_robin", "least_request", "ring_hash", "maglev", "random"] = (
        "round_robin"
    )
    rate_limit: RateLimitShape | None = None
    route_timeout_s: Seconds = 60.0
    access_log: StrictStr | None = None
    gateway_workers: Count = 2
    gateway_threads: Count = 32
    auth: Literal["api_keys", "open"] = "api_keys"
    request_headers_timeout_s: Seconds = 10.0
    #: default: route_timeout_s + 30
    stream_idle_timeout_s: Seconds | None = None
    connection_idle_timeout_s: Seconds = 60.0
    max_connections: Count = 10000


def _install_deps(value: Any) -> Any:
    """``true`` is every default, ``false`` none: environments on demand are off."""
    if value is True:
        return {}
    if value is False or value is None:
        return None
    if isinstance(value, Mapping):
        return value
    raise ValueError("must be true, false or a mapping (find_links, index_url, ...)")


class DepsShape(_Shape):
    """``install_deps`` as a mapping: where environments on demand come from."""

    find_links: list[StrictStr] | None = None
    index_url: StrictStr | None = None
    no_index: StrictBool = False
    cache: StrictStr | None = None
    max_envs: Count | None = None


class ServiceShape(_Shape):
    kind: Literal["standalone", "parallel", "function"] = "standalone"
    route: StrictStr | None = None
    port: Annotated[StrictInt, Field(ge=0, le=65536 - len(ENDPOINTS))] | None = None
    server: Spec | None = None
    worker: Spec | None = None
    functions: dict[str, Spec] | None = None
    workers: Annotated[StrictInt, Field(ge=0)] = 2
    example: StrictStr | Literal[False] | None = None
    #: static files beside a module, public at GET <route>/
    page: Spec | None = None
    #: environments on demand for shipped functions (``palm worker --install-deps``)
    install_deps: Annotated[DepsShape | None, BeforeValidator(_install_deps)] = None


class DeploymentShape(_Shape):
    name: Annotated[str, Field(pattern=r"^[^:\s*?\[\]]+$")] = "palm"
    redis: Annotated[str, Field(pattern=r"^(redis|rediss|unix)://")] | None = None
    host: StrictStr = "127.0.0.1"
    keys: Annotated[StrictStr, Field(min_length=1)] | None = None
    edge: Any = None
    services: Any = None
    notes: list[StrictStr] | None = None


def _path(prefix: str, loc: tuple[int | str, ...]) -> str:
    parts = [prefix] if prefix else []
    # a union's branch name ("function-after[...]", "float") says nothing to a user
    parts += [str(p) for p in loc if not (isinstance(p, str) and ("[" in p or p in _TYPES))]
    return ".".join(parts) or "the file"


_TYPES = frozenset({"str", "int", "float", "bool", "none", "literal[False]", "dict"})


def _problems(prefix: str, model: type[_Shape], raw: Any) -> tuple[Any, list[str]]:
    """``raw`` validated as ``model`` (None if not), and one line per problem."""
    try:
        return model.model_validate(raw if raw is not None else {}), []
    except ValidationError as exc:
        lines: dict[str, None] = {}
        for error in exc.errors():
            where = _path(prefix, error["loc"])
            if error["type"] == "extra_forbidden":
                # a nested shape's key (edge.rate_limit.burst) is checked against its fields
                owner = _NESTED.get(str(error["loc"][0]), model) if len(error["loc"]) > 1 else model
                known = ", ".join(owner.model_fields)
                message = f"unknown key (known: {known})"
            elif error["type"] == "missing":
                message = "is required"
            else:
                message = error["msg"].removeprefix("Value error, ")
                if "input" in error and not isinstance(error["input"], Mapping | list):
                    message += f", not {error['input']!r}"
            lines[f"{where}: {message}"] = None
        return None, list(lines)


#: the shapes nested in a shape, by the key that holds them
_NESTED: dict[str, type[_Shape]] = {"rate_limit": RateLimitShape, "install_deps": DepsShape}


def route_problems(name: str, route: str) -> list[str]:
    """What is wrong with a service name and its public route prefix (``/name``)."""
    if not name or "/" in name or name in RESERVED_NAMES:
        reserved = ", ".join(sorted(RESERVED_NAMES))
        return [f"services.{name}: bad service name {name!r} (no '/'; not one of {reserved})"]
    if not route.startswith("/") or route == "/" or route.endswith("/"):
        return [f"services.{name}.route: must look like '/name', not {route!r}"]
    if route.strip("/") in RESERVED_NAMES:
        return [f"services.{name}.route: {route!r} is reserved by the gateway"]
    return []


def _service_problems(name: str, raw: Any) -> list[str]:
    """What spans a service's keys, read from ``raw`` (even when a key is malformed)."""
    data = raw if isinstance(raw, Mapping) else {}
    kind = data.get("kind", "standalone")
    found: list[str] = []
    if kind in KINDS:
        needs = {"standalone": "server", "parallel": "worker", "function": "functions"}[kind]
        if not data.get(needs):
            found.append(f"services.{name}: a {kind} service needs '{needs}'")
    route = data.get("route") or f"/{name}"
    if isinstance(route, str):
        found += route_problems(name, route.rstrip("/") or "/")
    return found


def check_shape(raw: Any) -> tuple[DeploymentShape, EdgeShape, dict[str, ServiceShape]]:
    """The file's parts, checked; a ConfigError listing every problem otherwise."""
    if not isinstance(raw, Mapping):
        raise ConfigError("a deployment file must be a mapping (name:, edge:, services:)")
    problems: list[str] = []
    top, found = _problems("", DeploymentShape, raw)
    problems += found
    edge, found = _problems("edge", EdgeShape, raw.get("edge"))
    problems += found
    services_raw = raw.get("services")
    services: dict[str, ServiceShape] = {}
    if not isinstance(services_raw, Mapping) or not services_raw:
        problems.append("services: a deployment needs at least one service under 'services'")
        services_raw = {}
    for name, spec in services_raw.items():
        service, found = _problems(f"services.{name}", ServiceShape, spec)
        problems += found + _service_problems(str(name), spec)
        if service is not None:
            services[str(name)] = service
    problems += _port_problems(services)
    idle_s = edge.stream_idle_timeout_s if edge is not None else None
    if edge is not None and idle_s is not None and idle_s <= edge.route_timeout_s:
        problems.append(
            f"edge.stream_idle_timeout_s: ({idle_s:g}) must exceed edge.route_timeout_s "
            f"({edge.route_timeout_s:g}): a request waiting for its answer is idle"
        )
    if problems:
        raise ConfigError(_report(problems))
    return top, edge, services


def _port_problems(services: Mapping[str, ServiceShape]) -> list[str]:
    ports: dict[int, str] = {}
    found: list[str] = []
    for name, service in services.items():
        if service.port:
            count = 1 if service.kind == "standalone" else len(ENDPOINTS)
            for port in range(service.port, service.port + count):
                if port in ports:
                    found.append(f"services.{name}.port: port {port} is {ports[port]!r}'s too")
                ports[port] = name
    return found


def _report(problems: list[str]) -> str:
    if len(problems) == 1:
        return problems[0]
    return f"{len(problems)} problems:\n" + "\n".join(f"  - {line}" for line in problems)


@contextlib.contextmanager
def _importable(directory: Path | None) -> Iterator[None]:
    """Modules resolve from the folder of the file, as they do for the services."""
    if directory is None or str(directory) in sys.path:
        yield
        return
    sys.path.insert(0, str(directory))
    try:
        yield
    finally:
        with contextlib.suppress(ValueError):
            sys.path.remove(str(directory))


def check_imports(
    targets: Mapping[str, tuple[str, type | None]], directory: Path | None = None
) -> None:
    """Import each ``key path -> (spec, base class or None for a function)``; a
    ConfigError listing every one that fails to import or is of the wrong kind."""
    from palm.ops.loading import load_object

    problems: list[str] = []
    with _importable(directory):
        for where, (spec, base) in targets.items():
            try:
                obj = load_object(spec)
            except ConfigError as exc:
                problems.append(f"{where}: {exc}")
                continue
            except Exception as exc:  # the module raised while being imported
                problems.append(f"{where}: importing {spec!r} raised {exc!r}")
                continue
            if base is None and not callable(obj):
                problems.append(f"{where}: {spec!r} is not a function")
            elif base is not None and not (isinstance(obj, type) and issubclass(obj, base)):
                problems.append(f"{where}: {spec!r} is not a subclass of {base.__qualname__}")
    if problems:
        raise ConfigError(_report(problems))
