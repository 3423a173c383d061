"""How a palm process joins its deployment: Redis state, central logs, counters.

A :class:`Deployment` opens the deployment's Redis (the URL given, or
``PALM_REDIS_URL``, or the embedded ``redis-server`` of the data directory,
started when ``start_redis`` is true), ships the process's ``palm`` log
records to Redis, and publishes its counters every ``publish_interval_s``.
Redis trouble never stops the process: without Redis it logs to stderr only,
and logs and counters buffer within bounds while Redis is away.

``redis_url=False`` keeps a process offline: no Redis is looked for or
started, whatever the environment says (what ``PALM_NO_REDIS`` does for the
processes that give no URL). In-process test clusters run that way.

``open(background=True)`` returns at once and connects in a thread, so a
master serves while its embedded Redis starts (a tenth of a second) and a
worker takes jobs while it looks for that Redis: records logged meanwhile are
held (within bounds) and shipped once Redis is there, counters are published
from then on, and :meth:`Deployment.opened` waits for the outcome.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections import deque
from typing import Literal

from palm.errors import PalmError
from palm.state.cache import Cache, MemoryCache
from palm.state.counters import CounterPublisher, Counters
from palm.state.logs import RedisLogHandler
from palm.state.store import REDIS_URL_ENV, State, open_state

__all__ = ["Deployment", "StateOrMemory"]

log = logging.getLogger(__name__)

#: How long a deployment opened in the background looks for a Redis it does
#: not start (a worker's, while its master starts the embedded one).
FIND_TIMEOUT_S = 10.0


class _HeldRecords(logging.Handler):
    """The ``palm`` records logged before Redis is there: kept (the newest
    ``limit``), then handed on in order, and every later one at once."""

    def __init__(self, level: int, limit: int = 10_000) -> None:
        super().__init__(level)
        self._records: deque[logging.LogRecord] = deque(maxlen=limit)
        self._target: logging.Handler | None = None

    def emit(self, record: logging.LogRecord) -> None:
        with self._hold():
            target = self._target
            if target is None:
                self._records.append(record)
                return
        if record.levelno >= target.level:
            target.handle(record)

    @property
    def target(self) -> logging.Handler | None:
        return self._target

    def hand_on(self, target: logging.Handler | None) -> None:
        """Pass what is held (and what comes) to ``target``; None drops it."""
        with self._hold():
            held, self._target = list(self._records), target
            self._records.clear()
            if target is not None:  # under the lock: no later record overtakes these
                for record in held:
                    if record.levelno >= target.level:
                        target.handle(record)

    def _hold(self) -> threading.RLock:
        assert self.lock is not None
        return self.lock


class Deployment:
    """The shared parts one palm process uses; ``open()`` then ``close()``."""

    def __init__(
        self,
        server: str,
        worker: str = "",
        *,
        redis_url: str | Literal[False] | None = None,
        cluster: str | None = None,
        start_redis: bool = False,
        publish: bool = True,
        publish_interval_s: float = 1.0,
    ) -> None:
        self.server = server
        self.worker = worker
        self.redis_url = redis_url
        self.cluster = cluster or os.environ.get("PALM_CLUSTER", "default")
        self.start_redis = start_redis
        self.publish = publish
        self.publish_interval_s = publish_interval_s
        self.counters = Counters(server)
        self.state: State | None = None
        self._handler: RedisLogHandler | None = None
        self._publisher: CounterPublisher | None = None
        self._held: _HeldRecords | None = None
        self._level_before = logging.NOTSET
        self._opener: threading.Thread | None = None
        self._closing = threading.Event()

    def open(self, *, background: bool = False) -> Deployment:
        """Connect to (or start) Redis; without one, carry on with stderr logs only.

        ``background``: return at once and connect in a thread (see the module).
        """
        self._closing.clear()
        url = self.redis_url
        if url is False or (url is None and os.environ.get("PALM_NO_REDIS")):
            return self
        if not background:
            self._connect(patient=False)
            return self
        # redis-py is loaded here, not in the thread: a thread running while the
        # interpreter exits (a master serving a script that ended) cannot import it
        import redis  # noqa: F401

        self._held = _HeldRecords(logging.INFO)
        self._level_before = logging.getLogger("palm").level
        self._ship_palm_records(self._held)
        # only an embedded Redis is looked for again: another process may be starting it
        patient = not self.start_redis and not (url or os.environ.get(REDIS_URL_ENV))
        opener = threading.Thread(
            target=self._connect_soon, args=(patient,), name=f"palm-state-{self.server}"
        )
        opener.daemon = True
        opener.start()
        self._opener = opener  # started: opened() may join it from any thread
        return self

    def opened(self, timeout_s: float | None = None) -> State | None:
        """The Redis state once a background :meth:`open` is through (None: without one)."""
        opener = self._opener
        if opener is not None:
            opener.join(timeout_s)
        return self.state

    def _connect_soon(self, patient: bool) -> None:
        try:
            self._connect(patient)
        except Exception:  # the process goes on without Redis, as when none answers
            log.exception("%s runs without shared state", self.server)
            self._let_go_of_held()

    def _connect(self, patient: bool) -> None:
        """Open the state, ship logs, publish counters. ``patient``: keep looking
        (a while) for a Redis another process is starting."""
        deadline = time.monotonic() + FIND_TIMEOUT_S
        delay_s = 0.02
        while True:
            try:
                state = open_state(self.redis_url or None, self.cluster, start=self.start_redis)
                break
            except PalmError as exc:
                if not patient or time.monotonic() + delay_s > deadline:
                    log.info("%s runs without shared state: %s", self.server, exc)
                    self._let_go_of_held()
                    return
            if self._closing.wait(delay_s):
                return
            delay_s = min(delay_s * 2, 0.5)
        self.state = state
        self._handler = RedisLogHandler(state, self.server, self.worker, level=logging.INFO)
        if self._held is not None:
            self._held.hand_on(self._handler)
        else:
            self._ship_palm_records(self._handler)
        if self.publish:
            self._publisher = CounterPublisher(state, self.counters, self.publish_interval_s)
            self._publisher.start()

    def _let_go_of_held(self) -> None:
        """Without Redis after all: drop what is held, log as before the opening."""
        held = self._held
        if held is None or held.target is not None:
            return
        held.hand_on(None)
        palm_logger = logging.getLogger("palm")
        palm_logger.removeHandler(held)
        if palm_logger.level == logging.INFO:
            palm_logger.setLevel(self._level_before)

    @staticmethod
    def _ship_palm_records(handler: logging.Handler) -> None:
        palm_logger = logging.getLogger("palm")
        palm_logger.addHandler(handler)
        if palm_logger.level == logging.NOTSET or palm_logger.level > logging.INFO:
            palm_logger.setLevel(logging.INFO)

    def close(self) -> None:
        """Flush what is buffered (within bounds) and let go of Redis."""
        self._closing.set()
        if self._opener is not None:
            self._opener.join()  # a lookup stops now; a start ends within its timeout
            self._opener = None
        self._let_go_of_held()
        if self._held is not None:
            logging.getLogger("palm").removeHandler(self._held)
            self._held = None
        if self._publisher is not None:
            self._publisher.stop()
            self._publisher = None
        if self._handler is not None:
            logging.getLogger("palm").removeHandler(self._handler)
            self._handler.close()
            self._handler = None
        if self.state is not None:
            self.state.close()
            self.state = None


class StateOrMemory:
    """The cache of a process whose deployment opens in the background: its
    Redis once open, this process's memory when it has none. Calls made while
    it opens wait for it (they run in the db endpoint's threads)."""

    def __init__(self, deployment: Deployment) -> None:
        self.deployment = deployment
        self.memory = MemoryCache()

    def _cache(self) -> Cache:
        state = self.deployment.opened()
        return state if state is not None else self.memory

    def set(self, value: bytes, key: str | None = None) -> str:
        return self._cache().set(value, key)

    def get(self, key: str) -> bytes | None:
        return self._cache().get(key)

    def delete(self, key: str) -> bool:
        return self._cache().delete(key)
