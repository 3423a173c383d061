"""Who may call the gateway: ``Authorization: Bearer <API key>`` on every route but
``/healthz`` and the dashboard's page and static files (:func:`is_open_path`).

:class:`Authenticator` checks a request's ``Authorization`` header against the
deployment's API keys in Redis (:class:`palm.state.apikeys.ApiKeyStore`):

- no header, or a malformed, unknown or revoked key: 401 with
  ``WWW-Authenticate: Bearer``;
- a key over its rate (requests per second, a fixed one-second window counted
  in Redis and shared by every gateway process): 429 with ``Retry-After: 1``;
- Redis unreachable: 503. The gateway never serves unchecked requests.

A valid lookup is cached in the process for ``cache_s`` seconds (1 by
default), so a key without a rate limit costs no Redis round trip on most
requests, and a revoked key is refused by every gateway process within
``cache_s`` seconds. Only valid keys are cached.

In ``open`` mode (local development) every request passes.
:func:`guard` puts the check in front of a WSGI app; the ASGI fast route asks
:meth:`Authenticator.admits` (a cached key, no parsing, no Redis) and calls
:meth:`Authenticator.check` itself when that is not enough.
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from palm.errors import ConfigError, StateError
from palm.gateway.body import discard_body
from palm.state.apikeys import ApiKey, ApiKeyStore, hash_token
from palm.state.store import State

__all__ = [
    "AUTH_MODES",
    "OPEN_PATHS",
    "OPEN_PREFIXES",
    "Authenticator",
    "Denied",
    "from_settings",
    "guard",
    "is_open_path",
]

log = logging.getLogger("gateway")

AUTH_MODES = ("api_keys", "open")
#: Paths served without a key (what Envoy's health check and probes call, and
#: the dashboard's page and files: they hold no data, the page sends the key).
OPEN_PATHS = frozenset({"/healthz", "/dashboard", "/dashboard/"})
OPEN_PREFIXES = ("/dashboard/static/",)
_CACHE_LIMIT = 10_000

StartResponse = Callable[..., Any]
WSGIApp = Callable[[dict[str, Any], StartResponse], Iterable[bytes]]


class Denied(Exception):
    """A refused request: its status, JSON body and headers."""

    def __init__(self, status: int, error: str, detail: str, headers: list[tuple[str, str]]):
        super().__init__(detail)
        self.status = status
        self.error = error
        self.detail = detail
        self.headers = headers

    def body(self) -> bytes:
        return json.dumps({"error": self.error, "detail": self.detail}).encode() + b"\n"

    def status_line(self) -> str:
        phrases = {401: "Unauthorized", 429: "Too Many Requests", 503: "Service Unavailable"}
        return f"{self.status} {phrases.get(self.status, 'Error')}"


def _unauthorized(detail: str) -> Denied:
    return Denied(401, "unauthorized", detail, [("WWW-Authenticate", 'Bearer realm="palm"')])


class Authenticator:
    """Checks bearer tokens against a deployment's API keys (or lets all in, when open)."""

    def __init__(
        self,
        mode: str,
        store: ApiKeyStore | None = None,
        *,
        cache_s: float = 1.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if mode not in AUTH_MODES:
            raise ConfigError(f"auth must be one of {list(AUTH_MODES)}, not {mode!r}")
        if mode == "api_keys" and store is None:
            raise ConfigError("auth 'api_keys' needs the deployment's Redis (redis_url)")
        self.mode = mode
        self.store = store
        self.cache_s = cache_s
        self.clock = clock
        self._cache: dict[str, tuple[float, ApiKey]] = {}
        # token -> its digest: a caller's every request would hash the same token
        self._digests: dict[str, str] = {}
        # raw Authorization header -> its token's digest (admits() parses a header once)
        self._header_digests: dict[bytes, str] = {}

    @property
    def open(self) -> bool:
        return self.mode == "open"

    def needs_redis(self, path: str, authorization: str | None) -> bool:
        """False when :meth:`check` can answer from memory alone (no Redis round trip)."""
        if self.open or is_open_path(path):
            return False
        token = _bearer(authorization)
        if token is None:
            return False
        entry = self._cache.get(self._digest(token))
        return entry is None or entry[0] <= self.clock() or entry[1].rate > 0

    def admits(self, path: str, header: bytes | None) -> bool:
        """True when the request passes on what is in memory alone: open mode, or the
        raw ``Authorization`` header of a key checked less than ``cache_s`` ago that has
        no rate to count. False means "ask :meth:`check`", not "refused"."""
        if self.open:
            return True
        if header is None:
            return False
        digest = self._header_digests.get(header)
        if digest is None:
            token = _bearer(header.decode("latin-1"))
            if token is None:
                return False
            if len(self._header_digests) >= _CACHE_LIMIT:
                self._header_digests.clear()
            digest = self._header_digests[header] = self._digest(token)
        entry = self._cache.get(digest)
        return entry is not None and entry[0] > self.clock() and entry[1].rate <= 0

    def _digest(self, token: str) -> str:
        digest = self._digests.get(token)
        if digest is None:
            if len(self._digests) >= _CACHE_LIMIT:
                self._digests.clear()
            digest = self._digests[token] = hash_token(token)
        return digest

    def check(self, path: str, authorization: str | None) -> ApiKey | None:
        """The caller's key (None when open or for an open path); raises :class:`Denied`."""
        if self.open or is_open_path(path):
            return None
        assert self.store is not None
        token = _bearer(authorization)
        if token is None:
            raise _unauthorized("send an API key as 'Authorization: Bearer <key>'")
        digest = self._digest(token)
        now = self.clock()
        entry = self._cache.get(digest)
        try:
            if entry is not None and entry[0] > now:
                key = entry[1]
            else:
                found = self.store.lookup(token)
                if found is None:
                    self._cache.pop(digest, None)
                    raise _unauthorized("unknown or revoked API key")
                key = found
                if len(self._cache) >= _CACHE_LIMIT:
                    self._cache.clear()
                self._cache[digest] = (now + self.cache_s, key)
            if key.rate > 0 and not self.store.hit(key.key_id, key.rate):
                raise Denied(
                    429,
                    "rate limited",
                    f"API key {key.key_id} is over its {key.rate:g} requests per second",
                    [("Retry-After", "1")],
                )
        except StateError as exc:
            log.warning("cannot check API keys: %s", exc)
            raise Denied(
                503, "state unavailable", "cannot check API keys: Redis is unavailable", []
            ) from exc
        return key


def is_open_path(path: str) -> bool:
    """Whether ``path`` is served without an API key."""
    return path in OPEN_PATHS or (path.startswith(OPEN_PREFIXES) and ".." not in path)


def _bearer(authorization: str | None) -> str | None:
    if not authorization:
        return None
    scheme, _, token = authorization.strip().partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token or len(token) > 256:
        return None
    return token


def guard(app: WSGIApp, auth: Authenticator, max_body_bytes: int) -> WSGIApp:
    """``app`` behind the API key check (nothing in front when ``auth`` is open)."""
    if auth.open:
        return app

    def guarded(environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        try:
            auth.check(environ.get("PATH_INFO", ""), environ.get("HTTP_AUTHORIZATION"))
        except Denied as denied:
            discard_body(environ, max_body_bytes)
            body = denied.body()
            headers = [
                ("Content-Type", "application/json"),
                ("Content-Length", str(len(body))),
                *denied.headers,
            ]
            request_id = environ.get("HTTP_X_REQUEST_ID")
            if request_id:
                headers.append(("x-request-id", request_id))
            start_response(denied.status_line(), headers)
            return [body]
        return app(environ, start_response)

    return guarded


def from_settings(settings: Mapping[str, Any]) -> Authenticator:
    """The check of the gateway settings' ``auth`` mode, against their Redis."""
    if settings["auth"] == "open":
        log.warning("auth is open: the gateway serves every caller without an API key")
        return Authenticator("open")
    cluster = settings["cluster"] or os.environ.get("PALM_CLUSTER", "default")
    store = ApiKeyStore(State(settings["redis_url"], cluster))
    return Authenticator("api_keys", store, cache_s=settings["auth_cache_s"])
