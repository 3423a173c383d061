"""``map`` over generic workers: shipping functions and chunks of items.

A chunk travels as one payload: an HMAC-SHA256 tag over the body, then the
body, a pickle of ``(digest, function bytes, items)``. The function is
pickled with cloudpickle once per ``map`` call; workers keep unpickled
functions by digest. A worker unpickles nothing whose tag does not verify
with the cluster secret, so only peers that share the secret can make a
worker run code. The secret comes from the ``secret`` argument or the
``PALM_SECRET`` environment variable.

A chunk's answer is a pickle of ``("ok", results, seconds)`` or
``("err", index, type, message, traceback)`` for the first item that failed.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import pickle
import time
import traceback
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import cloudpickle

from palm.errors import ConfigError, ProtocolError, RemoteError

__all__ = [
    "MAP_FUNCTION",
    "ChunkPlanner",
    "decode_answer",
    "encode_chunk",
    "pickle_function",
    "resolve_secret",
    "run_chunk",
]

#: The function name under which every worker runs map chunks.
MAP_FUNCTION = "__map__"

_TAG = 32


def resolve_secret(secret: bytes | str | None = None) -> bytes | None:
    """The cluster secret: the argument, else ``PALM_SECRET``, else None."""
    if secret is None:
        secret = os.environ.get("PALM_SECRET") or None
    if secret is None:
        return None
    return secret.encode() if isinstance(secret, str) else bytes(secret)


def _tag(secret: bytes, body: bytes) -> bytes:
    return hmac.new(secret, body, hashlib.sha256).digest()


def pickle_function(fn: Callable[[Any], Any]) -> tuple[bytes, bytes]:
    """``(digest, bytes)`` of a function pickled with cloudpickle."""
    if isinstance(fn, str):
        raise ConfigError("map takes a Python callable, not source text")
    if not callable(fn):
        raise ConfigError(f"map takes a callable, got {type(fn).__name__}")
    data = cloudpickle.dumps(fn)
    return hashlib.sha256(data).digest()[:16], data


def encode_chunk(secret: bytes, digest: bytes, fn_bytes: bytes, items: list[Any]) -> bytes:
    try:
        body = pickle.dumps((digest, fn_bytes, items), protocol=pickle.HIGHEST_PROTOCOL)
    except (pickle.PicklingError, TypeError, AttributeError):
        body = cloudpickle.dumps((digest, fn_bytes, items))
    return _tag(secret, body) + body


def run_chunk(payload: bytes, secret: bytes | None, functions: dict[bytes, Any]) -> bytes:
    """Run one chunk on a worker; never raises."""
    if secret is None:
        return _error(-1, "palm.ConfigError", "this worker has no cluster secret: set PALM_SECRET")
    tag, body = payload[:_TAG], payload[_TAG:]
    if len(tag) != _TAG or not hmac.compare_digest(tag, _tag(secret, body)):
        return _error(-1, "palm.AuthenticationError", "chunk signature does not match the secret")
    try:
        digest, fn_bytes, items = pickle.loads(body)
        fn = functions.get(digest)
        if fn is None:
            fn = cloudpickle.loads(fn_bytes)
            if len(functions) > 64:
                functions.clear()
            functions[digest] = fn
    except Exception as exc:
        return _error(-1, type(exc).__qualname__, f"cannot unpickle the chunk: {exc}")
    start = time.perf_counter()
    results = []
    for index, item in enumerate(items):
        try:
            results.append(fn(item))
        except Exception as exc:
            tb = traceback.format_exc()
            return _error(index, _type_name(exc), str(exc), tb)
    elapsed = time.perf_counter() - start
    try:
        data: bytes = pickle.dumps(("ok", results, elapsed), protocol=pickle.HIGHEST_PROTOCOL)
        return data
    except Exception:
        try:
            fallback: bytes = cloudpickle.dumps(("ok", results, elapsed))
            return fallback
        except Exception as exc:
            return _error(-1, _type_name(exc), f"cannot pickle the results: {exc}")


def _type_name(exc: BaseException) -> str:
    klass = type(exc)
    return (
        klass.__qualname__
        if klass.__module__ == "builtins"
        else f"{klass.__module__}.{klass.__qualname__}"
    )


def _error(index: int, type_: str, message: str, tb: str = "") -> bytes:
    return pickle.dumps(("err", index, type_, message, tb))


def decode_answer(payload: bytes, first_index: int, function: str) -> tuple[list[Any], float]:
    """A chunk's results and the seconds its worker spent, or its error raised."""
    try:
        answer = pickle.loads(payload)
    except Exception as exc:
        raise ProtocolError(f"map answer does not unpickle: {exc}") from exc
    if type(answer) is not tuple or not answer:
        raise ProtocolError("a map answer is not a tuple")
    if answer[0] == "ok":
        if len(answer) != 3 or type(answer[1]) is not list:
            raise ProtocolError("a map answer's results are not a list")
        if type(answer[2]) not in (int, float):
            raise ProtocolError("a map answer's time is not a number")
        return answer[1], float(answer[2])
    if len(answer) != 5 or answer[0] != "err":
        raise ProtocolError("a map answer is neither results nor an error")
    _, index, type_, message, tb = answer
    if not (type(index) is int and type(type_) is str and type(message) is str and type(tb) is str):
        raise ProtocolError("a map error answer has fields of the wrong type")
    raise RemoteError(
        type_,
        message,
        tb,
        function=function,
        index=None if index < 0 else first_index + index,
    )


class ChunkPlanner:
    """Chunk sizes from measured per-item time.

    The first chunks are small probes; once workers report how long items
    take, chunks are sized to take about ``target_s`` each, but never so
    large that fewer than ``min_chunks_per_worker`` chunks per worker remain
    for the items still to come (when the total is known).
    """

    def __init__(
        self,
        total: int | None,
        workers: int,
        *,
        chunksize: int | None = None,
        target_s: float = 0.05,
        min_chunks_per_worker: int = 4,
        probe: int = 8,
        max_chunk: int = 100_000,
        first_wave_max: int = 50_000,
        min_chunk_s: float = 0.002,
    ) -> None:
        if chunksize is not None and chunksize < 1:
            raise ConfigError("chunksize must be at least 1")
        self.total = total
        self.workers = max(1, workers)
        self.fixed = chunksize
        self.target_s = target_s
        self.min_chunks_per_worker = min_chunks_per_worker
        self.probe = probe
        self.max_chunk = max_chunk
        self.first_wave_max = first_wave_max
        self.min_chunk_s = min_chunk_s
        self.item_s: float | None = None
        self.sent = 0

    def observe(self, items: int, seconds: float) -> None:
        if items <= 0:
            return
        per_item = max(seconds / items, 1e-8)
        self.item_s = per_item if self.item_s is None else 0.7 * self.item_s + 0.3 * per_item

    def next_size(self) -> int:
        if self.fixed is not None:
            return self.fixed
        if self.item_s is None:
            # nothing measured yet: with a known total, a first wave of a few
            # chunks per worker (like a pool's chunks); else a small probe
            size = self.probe
            if self.total is not None:
                per_wave = self.workers * self.min_chunks_per_worker
                size = max(self.probe, min(self.first_wave_max, -(-self.total // per_wave)))
        else:
            size = max(1, round(self.target_s / self.item_s))
        if self.total is not None:
            remaining = max(0, self.total - self.sent)
            if self.item_s is None:
                size = min(size, max(1, remaining))
            else:
                # a few chunks per worker for what is left, so they finish
                # together, but none so short that its round trip dominates
                cap = remaining // (self.workers * self.min_chunks_per_worker)
                floor = round(self.min_chunk_s / self.item_s)
                size = max(1, min(size, max(cap, floor), remaining))
        return min(size, self.max_chunk)

    def chunks(self, iterable: Iterable[Any]) -> Iterator[list[Any]]:
        it = iter(iterable)
        while True:
            size = self.next_size()
            chunk = []
            for item in it:
                chunk.append(item)
                if len(chunk) >= size:
                    break
            if not chunk:
                return
            self.sent += len(chunk)
            yield chunk
