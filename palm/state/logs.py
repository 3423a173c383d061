"""Central logs: every palm process writes its log records to Redis streams.

:class:`RedisLogHandler` is a :class:`logging.Handler` that never blocks the
caller: ``emit`` appends the record's fields to a bounded in-memory buffer and
a daemon thread writes them in batches (one pipeline round trip per batch) to
the capped stream ``palm:<cluster>:logs:<server>``. When the buffer is full
the oldest records are dropped, with one warning on stderr; while Redis is
down the records wait in the buffer and go out once Redis is back.

:func:`read_logs` reads those streams back, merged in time order, and can
follow them; ``palm logs`` is its command-line face.

The request id of a record comes from its ``request_id`` attribute (``extra=``)
or else from the :data:`current_request_id` context variable.
"""

from __future__ import annotations

import contextvars
import logging
import os
import socket
import sys
import threading
import time
from collections import deque
from collections.abc import Iterator
from typing import Any

from palm.state.store import State

__all__ = [
    "FIELDS",
    "RedisLogHandler",
    "attach_redis_logging",
    "current_request_id",
    "read_logs",
]

current_request_id: contextvars.ContextVar[str] = contextvars.ContextVar(
    "palm_request_id", default=""
)
"""The id of the request being served in this context, copied into log records."""

FIELDS = ("time", "level", "server", "worker", "host", "pid", "request_id", "message", "logger")
_SERVERS = "logs-servers"  # a set of the server names that have a log stream
_MAX_BACKOFF_S = 1.0


def _stream_key(state: State, server: str) -> str:
    return state.key("logs", server)


def _warn(message: str) -> None:
    try:
        sys.stderr.write(f"palm.state.logs: {message}\n")
        sys.stderr.flush()
    except (OSError, ValueError):
        pass  # stderr closed at interpreter exit


class RedisLogHandler(logging.Handler):
    """Ship log records to ``palm:<cluster>:logs:<server>`` without blocking.

    ``buffer_size`` bounds the records waiting in memory (records of the batch
    being written that were given up stay until its write ends); ``maxlen`` caps each
    stream (approximately, ``XADD MAXLEN ~``). ``close`` waits at most
    ``close_timeout_s`` for the buffer to drain.
    """

    def __init__(
        self,
        state: State,
        server: str,
        worker: str = "",
        *,
        level: int = logging.NOTSET,
        buffer_size: int = 10_000,
        batch_size: int = 500,
        maxlen: int = 100_000,
        flush_interval_s: float = 0.1,
        close_timeout_s: float = 2.0,
    ) -> None:
        super().__init__(level)
        if buffer_size < 1 or batch_size < 1:
            raise ValueError("buffer_size and batch_size must be at least 1")
        self.state = state
        self.server = server
        self.worker = worker
        self.host = socket.gethostname()
        self.buffer_size = buffer_size
        self.batch_size = batch_size
        self.maxlen = maxlen
        self.flush_interval_s = flush_interval_s
        self.close_timeout_s = close_timeout_s
        self.dropped = 0
        self.sent = 0
        self._stream = _stream_key(state, server)
        self._buffer: deque[dict[str, str]] = deque()
        self._cond = threading.Condition(threading.Lock())
        self._in_batch = 0
        self._batch_drops = 0
        self._closing = False
        self._redis_down = False
        self._overflowing = False
        self._thread = threading.Thread(target=self._run, name=f"palm-logs-{server}", daemon=True)
        self._thread.start()

    # -- caller side ---------------------------------------------------------

    def _fields(self, record: logging.LogRecord) -> dict[str, str]:
        message = record.getMessage()
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            message = f"{message}\n{record.exc_text}"
        if record.stack_info:
            message = f"{message}\n{record.stack_info}"
        request_id = getattr(record, "request_id", None) or current_request_id.get()
        return {
            "time": repr(record.created),
            "level": record.levelname,
            "server": self.server,
            "worker": str(getattr(record, "worker", "") or self.worker),
            "host": self.host,
            "pid": str(record.process or os.getpid()),
            "request_id": str(request_id),
            "message": message,
            "logger": record.name,
        }

    def emit(self, record: logging.LogRecord) -> None:
        if threading.current_thread() is self._thread or record.name.startswith("redis"):
            return  # never feed the shipper's own trouble back into itself
        try:
            fields = self._fields(record)
        except Exception:
            self.handleError(record)
            return
        with self._cond:
            if self._waiting() >= self.buffer_size:
                if self._in_batch > self._batch_drops:
                    self._batch_drops += 1  # the batch being written holds the oldest
                else:
                    self._buffer.popleft()
                self.dropped += 1
                if not self._overflowing:
                    self._overflowing = True
                    _warn(
                        f"log buffer full ({self.buffer_size} records) for server "
                        f"{self.server!r}; dropping the oldest records"
                    )
            self._buffer.append(fields)
            if len(self._buffer) >= self.batch_size:
                self._cond.notify()

    def _waiting(self) -> int:
        return len(self._buffer) + self._in_batch - self._batch_drops

    @property
    def pending(self) -> int:
        """Records not yet written to Redis (and not given up)."""
        with self._cond:
            return self._waiting()

    @property
    def redis_down(self) -> bool:
        """True after a write to Redis failed, until one succeeds again."""
        return self._redis_down

    def flush(self) -> None:
        """Wait (at most ``close_timeout_s``) until the buffer is written."""
        self.drain(self.close_timeout_s)

    def drain(self, timeout_s: float) -> bool:
        """Wait until the buffer is written, at most ``timeout_s``; True if it was.

        Returns False at once while Redis is known to be down.
        """
        deadline = time.monotonic() + timeout_s
        with self._cond:
            self._cond.notify_all()
            while self._waiting():
                remaining = deadline - time.monotonic()
                if remaining <= 0 or self._redis_down or not self._thread.is_alive():
                    return False
                self._cond.wait(min(remaining, 0.05))
            return True

    def close(self) -> None:
        """Flush what Redis accepts within ``close_timeout_s``, then stop the thread."""
        with self._cond:
            already = self._closing
            self._closing = True
            self._cond.notify_all()
        if not already:
            self._thread.join(self.close_timeout_s)
            left = self.pending
            if left:
                _warn(f"{left} log records for server {self.server!r} were not written to Redis")
        super().close()

    # -- shipper thread --------------------------------------------------------

    def _take_batch(self) -> list[dict[str, str]]:
        with self._cond:
            while not self._buffer and not self._closing:
                self._cond.wait(self.flush_interval_s)
            count = min(len(self._buffer), self.batch_size)
            batch = [self._buffer.popleft() for _ in range(count)]
            self._in_batch = count
            self._overflowing = self._overflowing and bool(self._buffer)
            return batch

    def _put_back(self, batch: list[dict[str, str]]) -> None:
        with self._cond:
            rest = batch[self._batch_drops :]  # the oldest, given up while being written
            room = self.buffer_size - len(self._buffer)
            keep = rest[-room:] if room > 0 else []
            self.dropped += len(rest) - len(keep)
            self._buffer.extendleft(reversed(keep))
            self._in_batch = 0
            self._batch_drops = 0

    def _write(self, batch: list[dict[str, str]]) -> None:
        pipe = self.state.client.pipeline(transaction=False)
        for fields in batch:
            pipe.xadd(self._stream, fields, maxlen=self.maxlen, approximate=True)  # type: ignore[arg-type]
        pipe.sadd(self.state.key(_SERVERS), self.server)
        pipe.execute()

    def _back_off(self, delay_s: float, deadline: float | None) -> None:
        """Sleep before the next attempt; new records do not cut it short, closing does."""
        until = time.monotonic() + delay_s
        with self._cond:
            while True:
                if self._closing and deadline is None:
                    return  # let the loop set the closing deadline at once
                end = until if deadline is None else min(until, deadline)
                remaining = end - time.monotonic()
                if remaining <= 0:
                    return
                self._cond.wait(remaining)

    def _run(self) -> None:
        import redis  # loaded on first use (see palm.state.embedded)

        backoff_s = 0.05
        deadline: float | None = None
        while True:
            batch = self._take_batch()
            if self._closing and deadline is None:
                deadline = time.monotonic() + self.close_timeout_s
            if not batch:
                if self._closing:
                    return
                continue
            try:
                self._write(batch)
            except (redis.RedisError, OSError) as exc:
                self._put_back(batch)
                if not self._redis_down:
                    self._redis_down = True
                    _warn(
                        f"Redis at {self.state.url} unreachable ({exc}); buffering up to "
                        f"{self.buffer_size} log records"
                    )
                if deadline is not None and time.monotonic() >= deadline:
                    return
                self._back_off(backoff_s, deadline)
                backoff_s = min(backoff_s * 2, _MAX_BACKOFF_S)
                continue
            with self._cond:
                self.dropped -= self._batch_drops  # given up, yet written after all
                self._in_batch = 0
                self._batch_drops = 0
                self.sent += len(batch)
                self._cond.notify_all()
            backoff_s = 0.05
            if self._redis_down:
                self._redis_down = False
                _warn(f"Redis at {self.state.url} is back; sending buffered log records")


def attach_redis_logging(
    state: State,
    server: str,
    worker: str = "",
    *,
    logger: logging.Logger | None = None,
    level: int = logging.INFO,
) -> RedisLogHandler:
    """Add a RedisLogHandler to ``logger`` (the root logger by default) and return it."""
    handler = RedisLogHandler(state, server, worker, level=level)
    target = logger if logger is not None else logging.getLogger()
    target.addHandler(handler)
    if target.level == logging.NOTSET or target.level > level:
        target.setLevel(level)
    return handler


# -- reading -------------------------------------------------------------------


def _decode(entry_id: bytes, raw: dict[bytes, bytes]) -> dict[str, Any]:
    record: dict[str, Any] = {k.decode(): v.decode("utf-8", "replace") for k, v in raw.items()}
    record["id"] = entry_id.decode()
    try:
        record["time"] = float(record.get("time", 0.0))
    except ValueError:
        record["time"] = 0.0
    try:
        record["pid"] = int(record.get("pid", 0))
    except ValueError:
        record["pid"] = 0
    return record


def _level_number(level: str | int | None) -> int:
    if level is None:
        return logging.NOTSET
    if isinstance(level, int):
        return level
    number = logging.getLevelName(level.upper())
    if not isinstance(number, int):
        raise ValueError(f"unknown log level {level!r}")
    return number


def _matches(record: dict[str, Any], min_level: int, since: float | None) -> bool:
    if since is not None and record["time"] < since:
        return False
    if min_level:
        number = logging.getLevelName(str(record.get("level", "")))
        if isinstance(number, int) and number < min_level:
            return False
    return True


def _servers(state: State, server: str | None) -> list[str]:
    if server is not None:
        return [server]
    members: Any = state.client.smembers(state.key(_SERVERS))
    return sorted(m.decode() for m in members)


def _tail(
    state: State, server: str, min_level: int, since: float | None, limit: int
) -> tuple[list[dict[str, Any]], bytes]:
    """The newest ``limit`` matching records of one stream (oldest first) and its last id."""
    key = _stream_key(state, server)
    found: list[dict[str, Any]] = []
    last_id = b"0-0"
    # Entries added after a Redis outage carry a later id than their time, so the
    # id range starts a minute before ``since`` and records are filtered by time.
    floor = f"{max(0, int(((since or 0) - 60) * 1000))}-0" if since else "-"
    upper: bytes | str = "+"
    page = max(100, min(limit, 1000))
    while len(found) < limit:
        entries: Any = state.client.xrevrange(key, max=upper, min=floor, count=page)
        if not entries:
            break
        if last_id == b"0-0":
            last_id = entries[0][0]
        for entry_id, raw in entries:
            record = _decode(entry_id, raw)
            if _matches(record, min_level, since):
                found.append(record)
        if len(entries) < page:
            break
        upper = "(" + entries[-1][0].decode()
    if last_id == b"0-0":  # nothing in range: follow from the stream's end, not its start
        newest: Any = state.client.xrevrange(key, count=1)
        if newest:
            last_id = newest[0][0]
    found.reverse()
    return found[-limit:], last_id


def read_logs(
    state: State,
    server: str | None = None,
    level: str | int | None = None,
    since: float | None = None,
    follow: bool = False,
    limit: int = 1000,
    *,
    poll_s: float = 1.0,
) -> Iterator[dict[str, Any]]:
    """Yield log records (dicts with :data:`FIELDS` plus ``id``) in time order.

    Without ``follow``: the newest ``limit`` records matching ``server``, the
    minimum ``level`` and ``since`` (epoch seconds), oldest first. With
    ``follow``: then keep yielding new records as they arrive (each batch in
    time order) until the caller stops iterating. Redis errors raise StateError.
    """
    min_level = _level_number(level)
    last_ids: dict[str, bytes] = {}
    found: list[dict[str, Any]] = []
    with state.translate("reading logs"):
        for name in _servers(state, server):
            records, last_ids[name] = _tail(state, name, min_level, since, limit)
            found.extend(records)
    found.sort(key=lambda r: r["time"])
    yield from found[-limit:]
    if not follow:
        return
    # Block for less than the socket timeout, or the wait itself would time out.
    block_ms = max(1, int(min(poll_s, state.socket_timeout_s / 2) * 1000))
    while True:
        with state.translate("following logs"):
            for name in _servers(state, server):
                last_ids.setdefault(name, b"0-0")
            if not last_ids:
                time.sleep(poll_s)
                continue
            keys = {_stream_key(state, name): last for name, last in last_ids.items()}
            replies: Any = state.client.xread(keys, block=block_ms)  # type: ignore[arg-type]
        batch: list[dict[str, Any]] = []
        prefix_len = len(state.key("logs", ""))
        for key, entries in replies or []:
            name = key.decode()[prefix_len:]
            for entry_id, raw in entries:
                last_ids[name] = entry_id
                record = _decode(entry_id, raw)
                if _matches(record, min_level, since):
                    batch.append(record)
        batch.sort(key=lambda r: r["time"])
        yield from batch
