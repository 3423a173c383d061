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
"""

from __future__ import annotations

import logging
import os
from typing import Literal

from palm.errors import PalmError
from palm.state.counters import CounterPublisher, Counters
from palm.state.logs import RedisLogHandler
from palm.state.store import State, open_state

__all__ = ["Deployment"]

log = logging.getLogger(__name__)


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

    def open(self) -> Deployment:
        """Connect to (or start) Redis; without one, carry on with stderr logs only."""
        url = self.redis_url
        if url is False or (url is None and os.environ.get("PALM_NO_REDIS")):
            return self
        try:
            self.state = open_state(url, self.cluster, start=self.start_redis)
        except PalmError as exc:
            log.info("%s runs without shared state: %s", self.server, exc)
            return self
        self._handler = RedisLogHandler(self.state, self.server, self.worker, level=logging.INFO)
        palm_logger = logging.getLogger("palm")
        palm_logger.addHandler(self._handler)
        if palm_logger.level == logging.NOTSET or palm_logger.level > logging.INFO:
            palm_logger.setLevel(logging.INFO)
        if self.publish:
            self._publisher = CounterPublisher(
                self.state, self.counters, self.publish_interval_s
            ).start()
        return self

    def close(self) -> None:
        """Flush what is buffered (within bounds) and let go of Redis."""
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
