"""Shared state in Redis: a cache of byte values every process of a deployment sees.

All keys of a deployment live under one prefix, ``palm:<cluster>:``; the cache
uses ``palm:<cluster>:cache:<key>``, central logs and performance counters
(:mod:`palm.state.logs`, :mod:`palm.state.counters`) use their own sub-prefixes.

Every Redis failure reaches the caller as :class:`palm.errors.StateError`
naming the URL. Sockets have short timeouts, so a dead Redis fails fast, and
each call reconnects on its own once Redis is back.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

from palm.errors import ConfigError, StateError
from palm.state.embedded import default_data_dir, ensure_redis, find_live_redis

if TYPE_CHECKING:  # imported where used: see palm.state.embedded
    import redis

__all__ = [
    "REDIS_URL_ENV",
    "State",
    "check_cluster",
    "open_state",
    "resolve_redis_url",
]

REDIS_URL_ENV = "PALM_REDIS_URL"
_SCHEMES = ("redis://", "rediss://", "unix://")
_T = TypeVar("_T")


def resolve_redis_url(url: str | None = None) -> str | None:
    """The Redis URL to use: ``url`` if given, else ``$PALM_REDIS_URL``, else None.

    None means "no Redis was named": the caller starts or reuses an embedded one
    (:func:`palm.state.embedded.ensure_redis`).
    """
    chosen = url or os.environ.get(REDIS_URL_ENV) or None
    if chosen is not None and not chosen.startswith(_SCHEMES):
        raise ConfigError(f"Redis URL {chosen!r} must start with one of {', '.join(_SCHEMES)}")
    return chosen


def check_cluster(cluster: str) -> str:
    """Return ``cluster`` if it is usable inside Redis keys, else raise ConfigError."""
    if not cluster or any(ch in cluster for ch in ": \t\r\n*?[]"):
        raise ConfigError(
            f"cluster name {cluster!r} must be non-empty, without ':', spaces or *?[]"
        )
    return cluster


class State:
    """A handle on a deployment's Redis: the shared cache plus helpers for its keys."""

    def __init__(
        self,
        url: str,
        cluster: str = "default",
        *,
        socket_timeout_s: float = 1.0,
    ) -> None:
        checked = resolve_redis_url(url)
        if checked is None:
            raise ConfigError("State needs a Redis URL")
        self.url = checked
        self.cluster = check_cluster(cluster)
        self.prefix = f"palm:{cluster}:"
        self.socket_timeout_s = socket_timeout_s
        import redis
        from redis.backoff import NoBackoff
        from redis.retry import Retry

        try:
            self._client = redis.Redis.from_url(
                checked,
                socket_timeout=socket_timeout_s,
                socket_connect_timeout=socket_timeout_s,
                # One immediate retry replaces a pooled connection that died with a
                # restarted server; a server that is really down fails at once.
                retry=Retry(NoBackoff(), 1),
                health_check_interval=0,
            )
        except ValueError as exc:
            raise ConfigError(f"bad Redis URL {checked!r}: {exc}") from exc

    @property
    def client(self) -> redis.Redis:
        """The underlying redis-py client (thread-safe; raises redis errors, not palm's)."""
        return self._client

    def key(self, *parts: str) -> str:
        """A key under the prefix: ``key('stats', 'a')`` -> ``palm:<cluster>:stats:a``"""
        return self.prefix + ":".join(parts)

    @contextmanager
    def translate(self, action: str) -> Iterator[None]:
        """Turn redis-py errors raised inside the block into StateError naming the URL."""
        import redis

        try:
            yield
        except redis.RedisError as exc:
            raise StateError(f"Redis at {self.url}: {action} failed: {exc}") from exc
        except OSError as exc:
            raise StateError(f"Redis at {self.url}: {action} failed: {exc}") from exc

    def _call(self, action: str, fn: Callable[[], _T]) -> _T:
        with self.translate(action):
            return fn()

    def ping(self) -> bool:
        """True when Redis answers; raises StateError when it does not."""
        return bool(self._call("PING", self._client.ping))

    def set(self, value: bytes, key: str | None = None, *, ttl_s: float | None = None) -> str:
        """Store ``value`` under ``key`` (a fresh key when None) and return the key."""
        if not isinstance(value, bytes | bytearray | memoryview):
            raise TypeError(f"State.set takes bytes, not {type(value).__name__}")
        chosen = key if key is not None else uuid.uuid4().hex
        px = max(1, int(ttl_s * 1000)) if ttl_s is not None else None
        self._call(
            f"SET {chosen!r}", lambda: self._client.set(self.key("cache", chosen), value, px=px)
        )
        return chosen

    def get(self, key: str) -> bytes | None:
        """The value stored under ``key``, or None when there is none."""
        value = self._call(f"GET {key!r}", lambda: self._client.get(self.key("cache", key)))
        return value if value is None else bytes(value)  # type: ignore[arg-type]

    def delete(self, key: str) -> bool:
        """Remove ``key``; True if it existed, False if it did not."""
        removed = self._call(f"DEL {key!r}", lambda: self._client.delete(self.key("cache", key)))
        return bool(removed)

    def close(self) -> None:
        """Close the connections to Redis (later calls reconnect)."""
        self._client.close()

    def __enter__(self) -> State:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"State({self.url!r}, cluster={self.cluster!r})"


def open_state(
    url: str | None = None,
    cluster: str = "default",
    *,
    data_dir: str | os.PathLike[str] | None = None,
    start: bool = True,
) -> State:
    """A State for the named Redis, or the deployment's embedded one.

    With no URL (argument or ``$PALM_REDIS_URL``) the live embedded Redis of
    ``data_dir`` (default: :func:`palm.state.embedded.default_data_dir`) is
    reused; one is started only when ``start`` is true, otherwise StateError.
    """
    resolved = resolve_redis_url(url)
    if resolved is None:
        path = Path(data_dir) if data_dir is not None else default_data_dir(cluster)
        if start:
            resolved = ensure_redis(path, cluster)
        else:
            resolved = find_live_redis(path)
            if resolved is None:
                raise StateError(
                    f"no Redis URL given (--redis or ${REDIS_URL_ENV}) and no live "
                    f"embedded Redis in {path}"
                )
    return State(resolved, cluster)
