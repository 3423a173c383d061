"""Authenticator.admits: which requests pass on the cached check alone (a double for
the key store)."""

from __future__ import annotations

from typing import Any

import pytest

from palm.gateway.auth import Authenticator, Denied
from palm.state.apikeys import ApiKey


class Store:
    """The deployment's keys: token -> key; counts the lookups."""

    def __init__(self, keys: dict[str, ApiKey]) -> None:
        self.keys = keys
        self.lookups = 0

    def lookup(self, token: str) -> ApiKey | None:
        self.lookups += 1
        return self.keys.get(token)

    def hit(self, key_id: str, rate: float) -> bool:
        return True


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def authenticator(**keys: ApiKey) -> tuple[Authenticator, Store, Clock]:
    store, clock = Store(keys), Clock()
    store_arg: Any = store
    return Authenticator("api_keys", store_arg, cache_s=1.0, clock=clock), store, clock


PLAIN = ApiKey("k1", "plain", created=0.0)
LIMITED = ApiKey("k2", "limited", created=0.0, rate=50.0)


def test_a_key_is_admitted_from_memory_once_checked_until_its_cache_expires() -> None:
    auth, store, clock = authenticator(good=PLAIN)
    header = b"Bearer good"
    assert not auth.admits("/demo/foo", header)  # never checked: ask check()
    assert auth.check("/demo/foo", header.decode()) == PLAIN
    assert auth.admits("/demo/foo", header)
    assert auth.admits("/demo/foo", header)
    assert store.lookups == 1
    clock.now += 1.5
    assert not auth.admits("/demo/foo", header)  # revocation is seen within cache_s


def test_what_admits_leaves_to_check() -> None:
    auth, _store, _clock = authenticator(good=PLAIN, limited=LIMITED)
    auth.check("/demo/foo", "Bearer limited")
    assert not auth.admits("/demo/foo", b"Bearer limited")  # its rate is counted in Redis
    for header in (None, b"", b"Basic good", b"Bearer ", b"Bearer unknown"):
        assert not auth.admits("/demo/foo", header)
    with pytest.raises(Denied) as denied:
        auth.check("/demo/foo", "Bearer unknown")
    assert denied.value.status == 401
    assert not auth.admits("/demo/foo", b"Bearer unknown")


def test_open_mode_admits_everything() -> None:
    assert Authenticator("open").admits("/demo/foo", None)
