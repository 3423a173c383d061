"""API keys of a deployment's HTTP edge, kept in its Redis.

A key is a random token shown once, when it is made: ``palm_<id>_<secret>``.
Redis keeps only the SHA-256 of the token, with the key's name, creation time
and rate limit, under the deployment's prefix::

    palm:<cluster>:apikeys:ids              set of key ids
    palm:<cluster>:apikeys:key:<id>         hash: sha256, name, created, rate
    palm:<cluster>:apikeys:rate:<id>:<s>    requests in the one-second window <s>

Revoking a key deletes its hash, so every gateway refuses it at its next look
(gateways cache a valid lookup for a second or two: :mod:`palm.gateway.auth`).
Every Redis failure reaches the caller as :class:`palm.errors.StateError`.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time
from dataclasses import dataclass
from typing import Any

from palm.errors import ConfigError
from palm.state.store import State

__all__ = ["TOKEN_PREFIX", "ApiKey", "ApiKeyStore", "hash_token", "parse_rate"]

TOKEN_PREFIX = "palm"
_ID_BYTES = 6


def hash_token(token: str) -> str:
    """The hex SHA-256 of a token: all Redis ever holds of it."""
    return hashlib.sha256(token.encode("utf-8", "surrogateescape")).hexdigest()


def parse_rate(text: str | float | int | None) -> float:
    """Requests per second from ``10``, ``10/s`` or ``2.5/s``; 0 means no limit."""
    if text is None:
        return 0.0
    value = str(text).strip().lower().removesuffix("/s")
    try:
        rate = float(value)
    except ValueError as exc:
        raise ConfigError(f"rate {text!r} must look like 10/s") from exc
    if rate < 0 or rate != rate:
        raise ConfigError(f"rate {text!r} must be a non-negative number per second")
    return rate


@dataclass(frozen=True)
class ApiKey:
    """A key as stored (never its token)."""

    key_id: str
    name: str
    created: float
    #: requests per second allowed (a fixed one-second window); 0: no limit
    rate: float = 0.0


class ApiKeyStore:
    """Create, revoke, list and check the API keys of one deployment."""

    def __init__(self, state: State) -> None:
        self.state = state

    def _key(self, key_id: str) -> str:
        return self.state.key("apikeys", "key", key_id)

    def create(self, name: str = "", rate: float = 0.0) -> tuple[ApiKey, str]:
        """A new key and its token (the only time the token is known)."""
        if rate < 0:
            raise ConfigError("an API key's rate must be >= 0")
        key_id = secrets.token_hex(_ID_BYTES)
        token = f"{TOKEN_PREFIX}_{key_id}_{secrets.token_urlsafe(32)}"
        key = ApiKey(key_id, name, time.time(), float(rate))
        with self.state.translate("create API key"):
            pipe = self.state.client.pipeline()
            pipe.hset(
                self._key(key_id),
                mapping={
                    "sha256": hash_token(token),
                    "name": name,
                    "created": repr(key.created),
                    "rate": repr(key.rate),
                },
            )
            pipe.sadd(self.state.key("apikeys", "ids"), key_id)
            pipe.execute()
        return key, token

    def revoke(self, key_id: str) -> bool:
        """Delete a key; True if it existed."""
        with self.state.translate(f"revoke API key {key_id!r}"):
            pipe = self.state.client.pipeline()
            pipe.delete(self._key(key_id))
            pipe.srem(self.state.key("apikeys", "ids"), key_id)
            removed, _ = pipe.execute()
        return bool(removed)

    def get(self, key_id: str) -> ApiKey | None:
        """The stored key ``key_id``, or None."""
        with self.state.translate(f"read API key {key_id!r}"):
            raw = self.state.client.hgetall(self._key(key_id))
        record = _decode(raw)  # type: ignore[arg-type]
        return _key_of(key_id, record) if record else None

    def list(self) -> list[ApiKey]:
        """Every key, oldest first."""
        with self.state.translate("list API keys"):
            members: Any = self.state.client.smembers(self.state.key("apikeys", "ids"))
        ids = sorted(bytes(member).decode() for member in members)
        found = [key for key in map(self.get, ids) if key is not None]
        return sorted(found, key=lambda key: (key.created, key.key_id))

    def lookup(self, token: str) -> ApiKey | None:
        """The key a token belongs to, or None for a malformed, unknown or revoked token."""
        prefix, _, rest = token.partition("_")
        key_id, _, secret = rest.partition("_")
        if prefix != TOKEN_PREFIX or not key_id or not secret or not key_id.isalnum():
            return None
        with self.state.translate("look up API key"):
            raw = self.state.client.hgetall(self._key(key_id))
        record = _decode(raw)  # type: ignore[arg-type]
        stored = record.get("sha256", "")
        if not stored or not hmac.compare_digest(stored, hash_token(token)):
            return None
        return _key_of(key_id, record)

    def hit(self, key_id: str, rate: float, now: float | None = None) -> bool:
        """Count one request of ``key_id`` in the current second; False when over ``rate``."""
        second = int(time.time() if now is None else now)
        counter = self.state.key("apikeys", "rate", key_id, str(second))
        with self.state.translate("count API key request"):
            pipe = self.state.client.pipeline(transaction=False)
            pipe.incr(counter)
            pipe.expire(counter, 2)
            count, _ = pipe.execute()
        return int(count) <= rate


def _decode(raw: dict[bytes, bytes]) -> dict[str, str]:
    return {k.decode(): v.decode("utf-8", "replace") for k, v in raw.items()}


def _key_of(key_id: str, record: dict[str, str]) -> ApiKey:
    try:
        created = float(record.get("created", "0"))
        rate = float(record.get("rate", "0"))
    except ValueError:
        created, rate = 0.0, 0.0
    return ApiKey(key_id, record.get("name", ""), created, rate)
