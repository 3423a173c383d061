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
``workers``, ``gateway_workers``, ``gateway_threads``, ``circuit_breakers``
    pool sizes (worker processes; gateway processes and the threads in each
    that serve the Flask routes) and Envoy's circuit breaker thresholds.

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
returns the running deployment instead (stop it with ``.stop()``).

The deployment itself (processes, Envoy configuration) is not part of the
library: palm finds it through the ``puma`` entry point of the ``palm.edge``
group, which the ``gateway`` package provides (``palm.gateway.deploy:Puma``). This
module checks configurations on its own and imports nothing of the gateway.

``await puma_map(function, data)`` (the paper's form; PUMA's repository
wrote ``puma_map(mode=..., func=..., data=...)``) maps a function over data
on palm workers, results in order. Which workers:

* ``address=`` (or ``puma_config({"address": ...})``): the deployment running
  elsewhere whose master answers at that db address (``puma_start`` prints
  it), its functions signed with ``PALM_SECRET`` (on one machine, the user's
  local secret does);
* else the deployment this process started with ``puma_start(block=False)``;
* else a local cluster started on the first call and reused by the next
  ones (a warning says so, once, with its start-up time); ``puma_stop()`` or
  the end of the process stops it.

``mode`` is ``"parallel"`` (the workers, the default) or ``"sequential"``
(in this process, in order, no cluster: for debugging).

``puma_start()`` with no ``puma_service`` entry starts only the workers
``puma_map`` uses, and prints the address to give ``puma_map`` elsewhere.
"""

from __future__ import annotations

import asyncio
import atexit
import json
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from importlib.metadata import entry_points
from typing import Any, Protocol, TextIO

from palm.errors import ConfigError
from palm.ops.config import LB_POLICIES, check_route
from palm.serve.stopper import Stopper

__all__ = [
    "CONFIG_KEYS",
    "EDGE_GROUP",
    "LB_POLICIES",
    "Deployment",
    "check_route",
    "edge_implementation",
    "puma_config",
    "puma_map",
    "puma_service",
    "puma_start",
    "puma_stop",
]

CONFIG_KEYS = frozenset(
    {
        "address",
        "puma_services",
        "load_balancer",
        "rate_limit",
        "logging",
        "http_connection_manager",
        "redis",
        "workers",
        "gateway_workers",
        "gateway_threads",
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
#: What ``puma_map(mode=...)`` takes.
MAP_MODES = frozenset({"parallel", "sequential"})

#: The entry point group where the HTTP edge implementation registers itself.
EDGE_GROUP = "palm.edge"


class Deployment(Protocol):
    """What palm needs from a running PUMA deployment (see ``palm.gateway.deploy``)."""

    @property
    def url(self) -> str: ...

    def start(self) -> Deployment: ...

    def stop(self) -> None: ...

    def print_urls(self, out: TextIO | None = None) -> None: ...

    def map(self, function: Callable[[Any], Any], data: Iterable[Any]) -> list[Any]: ...


@dataclass
class _Registry:
    config: dict[str, Any] = field(default_factory=dict)
    services: dict[str, dict[str, Callable[..., Any]]] = field(default_factory=dict)
    running: Deployment | None = None


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
    for name, route in services.items():
        check_route(name, route.rstrip("/") or route)
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
    address = checked.get("address")
    if address is not None:
        checked["address"] = _check_address(address)
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


def edge_implementation(name: str = "puma") -> Any:
    """The object registered as ``name`` in the ``palm.edge`` entry point group."""
    found = [entry for entry in entry_points(group=EDGE_GROUP) if entry.name == name]
    if not found:
        raise ConfigError(
            f"no HTTP edge is installed (no {name!r} entry point in group {EDGE_GROUP!r}); "
            "install palm with its gateway package, e.g. `pip install -e .` in the repository"
        )
    try:
        return found[0].load()
    except ImportError as exc:
        raise ConfigError(f"the HTTP edge {found[0].value!r} cannot be imported: {exc}") from exc


def puma_start(*, block: bool = True) -> Deployment:
    """Start the deployment; block until SIGINT/SIGTERM unless ``block`` is False.

    With no service registered it starts only the workers of ``puma_map``.
    """
    from palm.ops.puma_map import MapWorkers

    puma: Deployment
    if _registry.services or _registry.config.get("puma_services"):
        factory = edge_implementation("puma")
        puma = factory(_registry.config, _registry.services).start()
    else:
        puma = MapWorkers(int(_registry.config.get("workers") or 2)).start()
    _registry.running = puma
    puma.print_urls()
    cluster = getattr(puma, "cluster", None)
    if cluster is not None and not isinstance(puma, MapWorkers):
        print(f"  puma_map address: {cluster.addresses['db']}", flush=True)
    if not block:
        return puma
    stopper = Stopper()
    try:
        with stopper.on_signals():
            while not stopper.wait(0.5):
                pass
    finally:
        stopper.close()
        puma.stop()
        if _registry.running is puma:
            _registry.running = None
        print("PUMA stopped", flush=True)
    return puma


async def puma_map(
    function: Callable[[Any], Any] | None = None,
    data: Iterable[Any] | None = None,
    *,
    mode: str = "parallel",
    func: Callable[[Any], Any] | None = None,
    address: str | None = None,
) -> list[Any]:
    """``map(function, data)`` on palm workers; results in order.

    ``func`` is PUMA's keyword for ``function``; ``mode`` is ``"parallel"``
    or ``"sequential"``; ``address`` (or the configured one) names a
    deployment running elsewhere. See the module's documentation.
    """
    if function is not None and func is not None and function is not func:
        raise ConfigError("puma_map: give the function once, as function or as func")
    fn = function if function is not None else func
    if fn is None or not callable(fn):
        raise ConfigError("puma_map needs a callable (function=, or PUMA's func=)")
    if data is None:
        raise ConfigError("puma_map needs data, an iterable of items")
    if mode not in MAP_MODES:
        raise ConfigError(f"puma_map: mode must be one of {sorted(MAP_MODES)}, not {mode!r}")
    items = list(data)
    if mode == "sequential":
        return [fn(item) for item in items]
    from palm.ops import puma_map as targets

    target = address if address is not None else _registry.config.get("address")
    if target is not None:
        return await asyncio.to_thread(targets.map_at, _check_address(target), fn, items)
    running = _registry.running
    if running is not None:
        return await asyncio.to_thread(running.map, fn, items)
    workers = int(_registry.config.get("workers") or 2)
    if targets.local_cluster() is None:
        atexit.register(puma_stop)
    return await asyncio.to_thread(targets.map_locally, fn, items, workers)


def puma_stop() -> None:
    """Stop the local cluster ``puma_map`` started, and a deployment started with
    ``puma_start(block=False)``."""
    from palm.ops.puma_map import stop_local

    stop_local()
    running, _registry.running = _registry.running, None
    if running is not None:
        running.stop()


def _check_address(address: Any) -> str:
    if not isinstance(address, str) or "://" not in address:
        raise ConfigError(
            f"address must be the db address of a PUMA deployment's master, "
            f"like 'tcp://host:port', not {address!r}"
        )
    return address
