"""Asynchronous jobs: ``POST /jobs/...`` runs in the background, ``GET`` reads it.

A job is a Redis hash under ``palm:gateway:job:<id>`` with ``status``
(``pending``, ``done`` or ``failed``), ``service``, ``function``, the result
bytes when done, or the error fields when failed. A map job
(:meth:`JobStore.submit_map`) also has ``kind`` ``map`` and its progress:
``done`` items of ``total``, updated while it runs. Every write renews the
record's TTL, so finished records expire ``job_ttl_s`` after they finish. The
record lives in Redis, so any gateway process can answer for any job.

The job runs on a thread pool in the process that accepted it; if that process
dies the record stays ``pending`` until it expires.
"""

from __future__ import annotations

import logging
import os
import threading
import time
import uuid
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from typing import Any, cast

import redis

from palm.errors import StateError

__all__ = ["KEY_PREFIX", "PROGRESS_INTERVAL_S", "JobStore"]

log = logging.getLogger("gateway")

KEY_PREFIX = "palm:gateway:job:"
#: How often a map job's progress is written to its record, at most.
PROGRESS_INTERVAL_S = 0.2


class JobStore:
    def __init__(self, redis_url: str, ttl_s: int, threads: int) -> None:
        self.redis_url = redis_url
        self.ttl_s = ttl_s
        self.threads = threads
        self._lock = threading.Lock()
        self._pid = -1
        self._redis: redis.Redis | None = None
        self._executor: ThreadPoolExecutor | None = None

    def _connect(self) -> tuple[redis.Redis, ThreadPoolExecutor]:
        with self._lock:
            if self._pid != os.getpid() or self._redis is None or self._executor is None:
                self._pid = os.getpid()
                self._redis = redis.Redis.from_url(self.redis_url, socket_timeout=5.0)
                self._executor = ThreadPoolExecutor(self.threads, thread_name_prefix="palm-job")
            return self._redis, self._executor

    def _write(self, job_id: str, fields: dict[str, str | bytes]) -> None:
        client, _ = self._connect()
        key = KEY_PREFIX + job_id
        try:
            pipe = client.pipeline()
            pipe.hset(key, mapping=cast(Mapping[Any, Any], fields))
            pipe.expire(key, self.ttl_s)
            pipe.execute()
        except redis.RedisError as exc:
            raise StateError(f"cannot store job {job_id}: {exc}") from exc

    def submit(
        self,
        service: str,
        function: str,
        run: Callable[[], bytes],
        describe_error: Callable[[BaseException], dict[str, Any]],
    ) -> str:
        """Record a pending job, start ``run`` in the background, return the id."""
        job_id = uuid.uuid4().hex
        self._write(job_id, {"status": "pending", "service": service, "function": function})
        self._start(job_id, run, describe_error)
        return job_id

    def submit_map(
        self,
        service: str,
        function: str,
        total: int,
        run: Callable[[Callable[[int], None]], bytes],
        describe_error: Callable[[BaseException], dict[str, Any]],
    ) -> str:
        """Record a pending map of ``total`` items and start ``run(report)`` in the
        background; ``report(done)`` records its progress (at most every
        ``PROGRESS_INTERVAL_S``, and the last count when it ends). Returns the id."""
        job_id = uuid.uuid4().hex
        fields: dict[str, str | bytes] = {
            "status": "pending",
            "kind": "map",
            "service": service,
            "function": function,
            "done": "0",
            "total": str(total),
        }
        self._write(job_id, fields)
        last = [time.monotonic(), 0]

        def report(done: int) -> None:
            now = time.monotonic()
            if done != last[1] and (now - last[0] >= PROGRESS_INTERVAL_S or done >= total):
                last[0], last[1] = now, done
                try:
                    self._write(job_id, {"done": str(done)})
                except StateError as exc:  # progress is worth no failed job
                    log.warning("cannot record the progress of job %s: %s", job_id, exc)

        self._start(job_id, lambda: run(report), describe_error, done_fields={"done": str(total)})
        return job_id

    def _start(
        self,
        job_id: str,
        run: Callable[[], bytes],
        describe_error: Callable[[BaseException], dict[str, Any]],
        done_fields: dict[str, str] | None = None,
    ) -> None:
        _, executor = self._connect()

        def work() -> None:
            try:
                result = run()
            except Exception as exc:
                error = describe_error(exc)
                fields: dict[str, str | bytes] = {"status": "failed"}
                fields.update({f"error_{k}": str(v) for k, v in error.items()})
                self._write(job_id, fields)
            else:
                self._write(job_id, {**(done_fields or {}), "status": "done", "result": result})

        executor.submit(work)

    def get(self, job_id: str) -> dict[str, bytes] | None:
        """The stored fields of a job, or ``None`` when it is unknown or expired."""
        client, _ = self._connect()
        try:
            raw: dict[bytes, bytes] = client.hgetall(KEY_PREFIX + job_id)  # type: ignore[assignment]
        except redis.RedisError as exc:
            raise StateError(f"cannot read job {job_id}: {exc}") from exc
        if not raw:
            return None
        return {key.decode(): value for key, value in raw.items()}

    def close(self) -> None:
        with self._lock:
            if self._executor is not None and self._pid == os.getpid():
                self._executor.shutdown(wait=False, cancel_futures=True)
            if self._redis is not None:
                self._redis.close()
            self._redis = None
            self._executor = None
