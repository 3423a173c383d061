"""Where a master keeps the shared cache it serves on its ``db_address``.

:class:`MemoryCache` lives in the master's process;
:class:`palm.state.store.State` (Redis) is the shared, persistent one that
deployments use. Both follow :class:`Cache`.
"""

from __future__ import annotations

import threading
import uuid
from typing import Protocol

__all__ = ["Cache", "MemoryCache", "new_key"]


def new_key() -> str:
    """A fresh cache key."""
    return uuid.uuid4().hex


class Cache(Protocol):
    def set(self, value: bytes, key: str | None = None) -> str: ...

    def get(self, key: str) -> bytes | None: ...

    def delete(self, key: str) -> bool: ...


class MemoryCache:
    """A cache in this process's memory (lost when the process ends)."""

    def __init__(self) -> None:
        self._data: dict[str, bytes] = {}
        self._lock = threading.Lock()

    def set(self, value: bytes, key: str | None = None) -> str:
        key = key or new_key()
        with self._lock:
            self._data[key] = bytes(value)
        return key

    def get(self, key: str) -> bytes | None:
        with self._lock:
            return self._data.get(key)

    def delete(self, key: str) -> bool:
        with self._lock:
            return self._data.pop(key, None) is not None
