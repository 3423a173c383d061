"""The gateway's configuration: defaults, ``PALM_GATEWAY_*`` variables, checks.

Keys (environment variable in brackets; values from the environment are JSON
when they parse as JSON, plain strings otherwise):

``services`` [``PALM_GATEWAY_SERVICES``]
    ``{name: {"kind": "standalone", "address": ..., "server_name": ...}}`` or
    ``{name: {"kind": "parallel", "push_address": ..., "pull_address": ...,
    "db_address": ..., "server_name": ...}}``, or ``{"kind": "function", ...}``
    with the parallel addresses plus ``functions_path``: a cloudpickle file of
    ``{function_name: callable}`` run by generic function workers (what
    :mod:`palm.puma` writes). ``server_name`` defaults to the service name.
``cluster`` [``PALM_GATEWAY_CLUSTER``, else ``PALM_CLUSTER``]
    the deployment whose palm counters ``/metrics`` shows (Redis key prefix).
``redis_url`` [``PALM_GATEWAY_REDIS_URL``]
    where asynchronous job results are kept; ``/jobs`` answers 503 without it.
``timeout_s`` [``PALM_GATEWAY_TIMEOUT_S``]
    how long a call may take before the gateway answers 504.
``max_payload_bytes`` [``PALM_GATEWAY_MAX_PAYLOAD_BYTES``]
    larger request bodies are refused with 413.
``job_ttl_s`` [``PALM_GATEWAY_JOB_TTL_S``]
    how long asynchronous job records live in Redis.
``wsgi_threads`` [``PALM_GATEWAY_WSGI_THREADS``]
    threads per gateway process for the requests the Flask app answers
    (everything but parallel jobs, which run on the event loop).
``job_threads`` [``PALM_GATEWAY_JOB_THREADS``]
    threads per gateway process that run asynchronous jobs.
``auth`` [``PALM_GATEWAY_AUTH``]
    ``"api_keys"`` (the default): every route but ``/healthz`` needs
    ``Authorization: Bearer <key>``, checked against the API keys in
    ``redis_url`` (:mod:`palm.gateway.auth`); ``"open"``: anyone may call (local
    development only).
``auth_cache_s`` [``PALM_GATEWAY_AUTH_CACHE_S``]
    how long a gateway process trusts a valid key it looked up: the bound on
    how long a revoked key keeps working.

``PALM_GATEWAY_CONFIG`` may hold the whole mapping as JSON; single variables
override its keys. The environment is read only when the app is created.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from typing import Any

from palm.errors import ConfigError

__all__ = ["DEFAULTS", "ENV_PREFIX", "from_environ", "resolve"]

ENV_PREFIX = "PALM_GATEWAY_"

DEFAULTS: dict[str, Any] = {
    "services": {},
    "redis_url": None,
    "cluster": None,
    "timeout_s": 30.0,
    "max_payload_bytes": 16 * 1024 * 1024,
    "job_ttl_s": 3600,
    "job_threads": 4,
    "wsgi_threads": 32,
    "auth": "api_keys",
    "auth_cache_s": 1.0,
}

SERVICE_KINDS = {
    "standalone": ("address",),
    "parallel": ("push_address", "pull_address"),
    "function": ("push_address", "pull_address", "functions_path"),
}


def parse_value(text: str) -> Any:
    try:
        return json.loads(text)
    except ValueError:
        return text


def from_environ(environ: Mapping[str, str] | None = None) -> dict[str, Any]:
    """The configuration keys set by ``PALM_GATEWAY_*`` variables."""
    env = os.environ if environ is None else environ
    found: dict[str, Any] = {}
    whole = env.get(ENV_PREFIX + "CONFIG")
    if whole:
        loaded = parse_value(whole)
        if not isinstance(loaded, dict):
            raise ConfigError(f"{ENV_PREFIX}CONFIG must be a JSON object")
        found.update(loaded)
    for key in DEFAULTS:
        value = env.get(ENV_PREFIX + key.upper())
        if value is not None:
            found[key] = parse_value(value)
    return found


def resolve(
    config: Mapping[str, Any] | None, environ: Mapping[str, str] | None = None
) -> dict[str, Any]:
    """Defaults, then the environment, then ``config``; checked."""
    merged = {**DEFAULTS, **from_environ(environ), **(config or {})}
    unknown = set(merged) - set(DEFAULTS)
    if unknown:
        raise ConfigError(f"unknown gateway configuration keys: {sorted(unknown)}")
    services = merged["services"]
    if not isinstance(services, dict):
        raise ConfigError("services must be a mapping of name to service description")
    merged["services"] = {name: check_service(name, spec) for name, spec in services.items()}
    if merged["auth"] not in ("api_keys", "open"):
        raise ConfigError(f"auth must be 'api_keys' or 'open', not {merged['auth']!r}")
    if merged["auth"] == "api_keys" and not merged["redis_url"]:
        raise ConfigError(
            "auth 'api_keys' needs redis_url (where the API keys are); or auth 'open'"
        )
    merged["auth_cache_s"] = float(merged["auth_cache_s"])
    if not 0 <= merged["auth_cache_s"] <= 60:
        raise ConfigError("auth_cache_s must be between 0 and 60 seconds")
    for key in ("timeout_s",):
        merged[key] = float(merged[key])
        if merged[key] <= 0:
            raise ConfigError(f"{key} must be positive")
    for key in ("max_payload_bytes", "job_ttl_s", "job_threads", "wsgi_threads"):
        merged[key] = int(merged[key])
        if merged[key] <= 0:
            raise ConfigError(f"{key} must be positive")
    return merged


def check_service(name: str, spec: Any) -> dict[str, Any]:
    if not isinstance(spec, dict):
        raise ConfigError(f"service {name!r}: expected a mapping, got {type(spec).__name__}")
    kind = spec.get("kind", "standalone")
    if kind not in SERVICE_KINDS:
        raise ConfigError(f"service {name!r}: kind must be one of {sorted(SERVICE_KINDS)}")
    missing = [key for key in SERVICE_KINDS[kind] if not spec.get(key)]
    if missing:
        raise ConfigError(f"service {name!r} ({kind}) needs {missing}")
    return {"kind": kind, "server_name": name, "db_address": None, **spec}
