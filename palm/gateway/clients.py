"""palm clients for the gateway, created lazily in each gunicorn worker process.

A palm client owns ZeroMQ sockets, which must not cross a ``fork``. Each
gateway process therefore creates its clients on first use (after gunicorn
forked it), and again when the process id changes. A parallel service has
one caller per process that every request thread uses at once (its jobs
travel together, see :mod:`palm.call.shared`). Other callers are lent to
one request thread at a time; a process keeps at most as many of them per
service as it ran requests at once, and drops one after a timeout, since its
socket may still receive the late reply.
"""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any, Protocol

from palm.errors import BadResult, TimeoutError, UnknownFunction
from palm.gateway.encoding import python_json

if TYPE_CHECKING:
    from palm.call.parallel import ParallelClient

__all__ = ["Caller", "ClientPool", "Progress", "make_caller"]

#: Called with the number of a map's results so far, each time some arrive.
Progress = Callable[[int], None]


class Caller(Protocol):
    """What the gateway needs from a palm client, whatever the service kind."""

    def call(self, function: str, payload: bytes, request_id: str | None = None) -> bytes: ...

    def map(
        self, function: str, payloads: list[bytes], on_progress: Progress | None = None
    ) -> list[bytes]: ...

    def close(self) -> None: ...


class StandaloneCaller:
    def __init__(self, spec: dict[str, Any], timeout_s: float) -> None:
        from palm.standalone import Client

        self.client = Client(
            spec["address"], spec["server_name"], db_address=spec["db_address"], timeout_s=timeout_s
        )

    def call(self, function: str, payload: bytes, request_id: str | None = None) -> bytes:
        return self.client.job(function, payload, request_id=request_id)

    def map(
        self, function: str, payloads: list[bytes], on_progress: Progress | None = None
    ) -> list[bytes]:
        results = []
        for payload in payloads:
            results.append(self.client.job(function, payload))
            if on_progress is not None:
                on_progress(len(results))
        return results

    def close(self) -> None:
        self.client.close()


class ParallelCaller:
    """A parallel service, shared by every thread of a gateway process.

    Single jobs go through one :class:`~palm.call.shared.SharedClient`, so
    the jobs of requests served at the same time travel together; each map
    borrows a :class:`~palm.call.parallel.ParallelClient` of its own.
    """

    shared = True

    def __init__(self, spec: dict[str, Any], timeout_s: float) -> None:
        from palm.call.shared import SharedClient

        self.spec = spec
        self.timeout_s = timeout_s
        self.client = SharedClient(
            spec["push_address"],
            spec["pull_address"],
            spec["db_address"],
            spec["server_name"],
            timeout_s=timeout_s,
        )
        self._lock = threading.Lock()
        self._mappers: list[ParallelClient] = []

    def call(self, function: str, payload: bytes, request_id: str | None = None) -> bytes:
        return self.client.eval(function, payload, request_id=request_id)

    def map(
        self, function: str, payloads: list[bytes], on_progress: Progress | None = None
    ) -> list[bytes]:
        if not payloads:
            return []
        from palm.standalone import ParallelClient

        with self._lock:
            mapper = self._mappers.pop() if self._mappers else None
        if mapper is None:
            spec = self.spec
            mapper = ParallelClient(
                spec["push_address"],
                spec["pull_address"],
                spec["db_address"],
                spec["server_name"],
                timeout_s=self.timeout_s,
            )
        try:
            # errors="raise": every outcome is a result's bytes
            # watched: messages of a twentieth of the items at most, so results
            # come back (and the progress moves) in steps, from every worker
            batch = None if on_progress is None else max(1, min(64, len(payloads) // 20))
            jobs = mapper.job(function, payloads, messages=len(payloads), ordered=True, batch=batch)
            results = []
            for result in jobs:
                if isinstance(result, bytes):
                    results.append(result)
                    if on_progress is not None:
                        on_progress(len(results))
        except TimeoutError:
            mapper.close()  # it may still get the late results: not lent again
            raise
        with self._lock:
            self._mappers.append(mapper)
        return results

    def close(self) -> None:
        self.client.close()
        with self._lock:
            mappers, self._mappers = self._mappers, []
        for mapper in mappers:
            mapper.close()


def to_bytes(value: Any, *, text_as_json: bool, function: str = "") -> bytes:
    """A Python function's result as response bytes (bytes as they are).

    Other values are JSON (see :func:`palm.gateway.encoding.python_json`: long
    integers as strings of decimal digits); one JSON cannot hold is a
    :class:`~palm.errors.BadResult`.
    """
    if isinstance(value, bytes | bytearray | memoryview):
        return bytes(value)
    if isinstance(value, str) and not text_as_json:
        return value.encode("utf-8", "surrogatepass")
    try:
        return python_json(value).encode("utf-8", "surrogatepass")
    except (TypeError, ValueError, RecursionError) as exc:
        raise BadResult(
            "palm.BadResult",
            f"the result cannot be written as JSON: {type(exc).__name__}: {exc}"[:500],
            function=function,
        ) from None


class FunctionCaller:
    """Python callables (registered with ``puma_service``) run by function workers.

    ``call`` hands the callable the request body (bytes); ``map`` hands it each
    item's JSON value. Results that are not bytes come back as UTF-8 text
    (``call``, for a ``str``) or as JSON.
    """

    def __init__(self, spec: dict[str, Any], timeout_s: float) -> None:
        import cloudpickle

        from palm.standalone import ParallelClient

        with open(spec["functions_path"], "rb") as source:
            self.functions: dict[str, Callable[[Any], Any]] = cloudpickle.load(source)
        self.service = spec["server_name"]
        # The cluster secret (signing pickled functions) comes from PALM_SECRET.
        self.client = ParallelClient(
            spec["push_address"],
            spec["pull_address"],
            spec["db_address"],
            spec["server_name"],
            timeout_s=timeout_s,
        )

    def _function(self, name: str) -> Callable[[Any], Any]:
        try:
            return self.functions[name]
        except KeyError:
            raise UnknownFunction(
                "palm.UnknownFunction",
                f"service {self.service!r} has no function {name!r}",
                server=self.service,
                function=name,
            ) from None

    def call(self, function: str, payload: bytes, request_id: str | None = None) -> bytes:
        (result,) = self.client.map(self._function(function), [payload])
        return to_bytes(result, text_as_json=False, function=function)

    def map(
        self, function: str, payloads: list[bytes], on_progress: Progress | None = None
    ) -> list[bytes]:
        fn = self._function(function)
        items = [json.loads(payload) for payload in payloads]
        results = self.client.map(fn, items, on_progress=on_progress)
        return [to_bytes(result, text_as_json=True, function=function) for result in results]

    def close(self) -> None:
        self.client.close()


def make_caller(spec: dict[str, Any], timeout_s: float) -> Caller:
    if spec["kind"] == "parallel":
        return ParallelCaller(spec, timeout_s)
    if spec["kind"] == "function":
        return FunctionCaller(spec, timeout_s)
    return StandaloneCaller(spec, timeout_s)


class ClientPool:
    """Idle callers per service, owned by one process."""

    def __init__(self, services: dict[str, dict[str, Any]], timeout_s: float) -> None:
        self.services = services
        self.timeout_s = timeout_s
        self._lock = threading.Lock()
        self._pid = os.getpid()
        self._idle: dict[str, list[Caller]] = {}
        self._shared: dict[str, Caller] = {}

    def _reset_after_fork(self) -> None:
        # Sockets inherited from the parent belong to it: drop them unclosed.
        if self._pid != os.getpid():
            self._pid = os.getpid()
            self._idle = {}
            self._shared = {}

    @contextmanager
    def borrow(self, service: str) -> Iterator[Caller]:
        with self._lock:
            self._reset_after_fork()
            shared = self._shared.get(service)
            if shared is None:
                idle = self._idle.setdefault(service, [])
                caller = idle.pop() if idle else None
        if shared is not None:  # a caller every thread may use at once
            yield shared
            return
        if caller is None:
            caller = make_caller(self.services[service], self.timeout_s)
            if getattr(caller, "shared", False):
                with self._lock:
                    mine = self._shared.setdefault(service, caller)
                if mine is not caller:
                    caller.close()
                yield mine
                return
        try:
            yield caller
        except TimeoutError:
            caller.close()
            raise
        except BaseException:
            with self._lock:
                self._idle.setdefault(service, []).append(caller)
            raise
        else:
            with self._lock:
                self._idle.setdefault(service, []).append(caller)

    def close(self) -> None:
        with self._lock:
            for callers in self._idle.values():
                for caller in callers:
                    caller.close()
            for caller in self._shared.values():
                caller.close()
            self._idle = {}
            self._shared = {}
