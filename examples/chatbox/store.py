"""Where dialog state lives: process memory (the monolith) or Redis (palm).

A turn is ``run_turn(session, turn, step)``: ``step(state)`` gets the session's
state (None for a new one) and returns the new state and the reply; the store
saves both at once, the reply under the turn's id. Asked again for the same
turn, a store answers the saved reply without running ``step``: a client that
retries a turn (its worker was killed, its connection broke) gets the one
answer, and the dialog moves on once.

:class:`RedisStore` makes the turn a compare-and-set (``WATCH`` the session
and the reply, ``MULTI``/``EXEC`` both): two turns of one session on two
workers never interleave; the loser runs again on the winner's state. A worker
killed before ``EXEC`` wrote nothing. Every key has a TTL (``ttl_s``).
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from typing import Any, Protocol

__all__ = ["MemoryStore", "RedisStore", "Step", "Store"]

State = dict[str, Any]
Reply = dict[str, Any]
Step = Callable[[State | None], tuple[State, Reply]]
TTL_S = 1800
PREFIX = "chatbox"


class Store(Protocol):
    ttl_s: int

    def exists(self, session: str) -> bool: ...

    def run_turn(self, session: str, turn: str, step: Step) -> Reply: ...

    def push_passive(self, session: str, message: Reply) -> int: ...

    def pop_passive(self, session: str) -> list[Reply]: ...

    def passive_len(self, session: str) -> int: ...

    def load(self, session: str) -> State | None: ...


class MemoryStore:
    """The monolith's store: dicts, one lock per session, expiry on read."""

    def __init__(self, ttl_s: int = TTL_S) -> None:
        self.ttl_s = ttl_s
        self._guard = threading.Lock()
        self._locks: dict[str, threading.Lock] = {}
        self._items: dict[str, tuple[float, Any]] = {}

    def _get(self, key: str) -> Any:
        item = self._items.get(key)
        if item is None or item[0] < time.monotonic():
            self._items.pop(key, None)
            return None
        return item[1]

    def _set(self, key: str, value: Any) -> None:
        self._items[key] = (time.monotonic() + self.ttl_s, value)

    def exists(self, session: str) -> bool:
        with self._guard:
            return self._get(f"s:{session}") is not None

    def load(self, session: str) -> State | None:
        with self._guard:
            state: State | None = self._get(f"s:{session}")
            return state

    def run_turn(self, session: str, turn: str, step: Step) -> Reply:
        with self._guard:
            lock = self._locks.setdefault(session, threading.Lock())
        with lock:
            with self._guard:
                done = self._get(f"r:{session}:{turn}")
                state = self._get(f"s:{session}")
            if done is not None:
                reply: Reply = done
                return reply
            new_state, reply = step(json.loads(json.dumps(state)) if state else None)
            with self._guard:
                self._set(f"s:{session}", new_state)
                self._set(f"r:{session}:{turn}", reply)
            return reply

    def push_passive(self, session: str, message: Reply) -> int:
        with self._guard:
            queue = self._get(f"p:{session}") or []
            queue.append(message)
            self._set(f"p:{session}", queue)
            return len(queue)

    def pop_passive(self, session: str) -> list[Reply]:
        with self._guard:
            queue: list[Reply] = self._get(f"p:{session}") or []
            self._items.pop(f"p:{session}", None)
            return queue

    def passive_len(self, session: str) -> int:
        with self._guard:
            return len(self._get(f"p:{session}") or [])


class RedisStore:
    """Dialog state in Redis, keyed by session id, every key with a TTL."""

    def __init__(self, url: str, ttl_s: int = TTL_S, prefix: str = PREFIX) -> None:
        import redis

        self.redis = redis.Redis.from_url(url)
        self.watch_error = redis.WatchError
        self.ttl_s = ttl_s
        self.prefix = prefix

    def key(self, kind: str, session: str, turn: str | None = None) -> str:
        return f"{self.prefix}:{kind}:{session}" + (f":{turn}" if turn is not None else "")

    def exists(self, session: str) -> bool:
        return bool(self.redis.exists(self.key("session", session)))

    def load(self, session: str) -> State | None:
        raw = self.redis.get(self.key("session", session))
        return json.loads(raw) if raw else None

    def run_turn(self, session: str, turn: str, step: Step) -> Reply:
        state_key, reply_key = self.key("session", session), self.key("reply", session, turn)
        for _attempt in range(200):
            with self.redis.pipeline() as pipe:
                try:
                    pipe.watch(state_key, reply_key)
                    done = pipe.get(reply_key)
                    if done is not None:
                        reply: Reply = json.loads(done)
                        return reply
                    raw = pipe.get(state_key)
                    new_state, reply = step(json.loads(raw) if raw else None)
                    pipe.multi()
                    pipe.set(state_key, json.dumps(new_state), ex=self.ttl_s)
                    pipe.set(reply_key, json.dumps(reply), ex=self.ttl_s)
                    pipe.expire(self.key("passive", session), self.ttl_s)
                    pipe.execute()
                    return reply
                except self.watch_error:
                    continue  # another turn of this session won: run on its state
        raise RuntimeError(f"session {session}: too many concurrent turns")

    def push_passive(self, session: str, message: Reply) -> int:
        key = self.key("passive", session)
        with self.redis.pipeline() as pipe:
            pipe.rpush(key, json.dumps(message))
            pipe.expire(key, self.ttl_s)
            length, _ = pipe.execute()
        return int(length)

    def pop_passive(self, session: str) -> list[Reply]:
        key = self.key("passive", session)
        with self.redis.pipeline() as pipe:  # MULTI: read and delete at once
            pipe.lrange(key, 0, -1)
            pipe.delete(key)
            raw, _ = pipe.execute()
        return [json.loads(item) for item in raw]

    def passive_len(self, session: str) -> int:
        return int(self.redis.llen(self.key("passive", session)))
