"""The parallel client: stream jobs through a master and its workers.

::

    client = ParallelClient(push_address='tcp://127.0.0.1:5556',
                            pull_address='tcp://127.0.0.1:5555',
                            db_address='tcp://127.0.0.1:5559',
                            server_name='server')
    for response in client.job('foo', repeat(b'a message', 10), messages=10):
        print(response)

Address names follow the master's: ``pull_address`` is where the master
pulls jobs from (the client sends there) and ``push_address`` is where the
master pushes results (the client receives there).

The blocking methods (``job``, ``map``) and the asyncio ones (``ajob``,
``amap``) drive the same :class:`~palm.call.jobs.JobStream`; only their sockets
differ.
"""

from __future__ import annotations

import itertools
import os
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterable, Iterator
from typing import Any

import zmq
import zmq.asyncio

from palm.call.jobs import JobStream, Outcome
from palm.errors import ConfigError, PayloadTooLarge, ProtocolError, RemoteError, TimeoutError
from palm.wire import shipping as mapping
from palm.wire.discovery import CacheCalls, CacheClient
from palm.wire.protocol import DEFAULT_MAX_MESSAGE_BYTES, Header, Kind, decode, jobs_in
from palm.wire.sockets import check_endpoint, make_socket

__all__ = ["ParallelClient"]

#: Seconds without any result before a streaming call gives up.
DEFAULT_TIMEOUT_S = 60.0


class ParallelClient(CacheCalls):
    """A client of a parallel :class:`~palm.serve.master.Master`."""

    def __init__(
        self,
        push_address: str,
        pull_address: str,
        db_address: str | None = None,
        server_name: str = "",
        *,
        timeout_s: float | None = DEFAULT_TIMEOUT_S,
        window: int = 2_000,
        batch: int = 64,
        max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES,
        secret: bytes | str | None = None,
        heartbeat_interval_s: float = 1.0,
    ) -> None:
        self.push_address = check_endpoint(push_address, "push_address")
        self.pull_address = check_endpoint(pull_address, "pull_address")
        self.db_address = db_address
        if not server_name:
            raise ConfigError("server_name must name the master")
        self.server_name = server_name
        self.timeout_s = timeout_s
        self.window = window
        self.batch = batch
        self.max_message_bytes = max_message_bytes
        self.secret = mapping.resolve_secret(secret)
        self.heartbeat_interval_s = heartbeat_interval_s
        self.client_id = uuid.uuid4().bytes
        # asyncio streams have sockets of their own, so an identity of their own:
        # the master routes results to the socket whose identity is the job's client
        self.async_client_id = uuid.uuid4().bytes
        self.session: str | None = None
        self.workers = 0
        self._ids = itertools.count(1)
        self._sockets: tuple[zmq.Socket[bytes], zmq.Socket[bytes]] | None = None
        self._pid = os.getpid()
        # when the blocking sockets last said HELLO (monotonic seconds)
        self._hello_at = float("-inf")
        self._cache: CacheClient | None = None

    # shared helpers ------------------------------------------------------------

    def _qualify(self, function: str) -> str:
        if not isinstance(function, str) or not function:
            raise ConfigError("function must be a non-empty string")
        return function if "." in function else f"{self.server_name}.{function}"

    def _stream(
        self,
        function: str,
        iterable: Iterable[bytes],
        messages: int | None,
        ordered: bool,
        window: int | None = None,
        batch: int | None = None,
        extra: dict[str, Any] | None = None,
        client: bytes | None = None,
    ) -> JobStream:
        return JobStream(
            client or self.client_id,
            self._qualify(function),
            iterable,
            ids=self._ids,
            messages=messages,
            ordered=ordered,
            window=window or self.window,
            batch=batch or self.batch,
            max_message_bytes=self.max_message_bytes,
            extra=extra,
        )

    def _hello(self, client: bytes | None = None) -> list[bytes]:
        return [Header(Kind.HELLO, 0, client or self.client_id).to_wire()]

    def _control(self, frames: list[bytes]) -> bool:
        """Handle a WELCOME; True when it comes from a restarted master (a new session).

        A new master lost whatever the old one held: the caller sends its
        outstanding jobs again.
        """
        try:
            header, _ = decode(frames)
        except ProtocolError:
            return False
        if header.kind != Kind.WELCOME:
            return False
        extra = header.extra or {}
        session = extra.get("session")
        self.workers = int(extra.get("workers", self.workers) or 0)
        restarted = self.session is not None and session != self.session
        self.session = session if isinstance(session, str) else None
        return restarted

    def _timeout(self, stream: JobStream, waited_s: float) -> TimeoutError:
        return TimeoutError(
            f"no result from master {self.server_name!r} at {self.push_address} for "
            f"{waited_s:.1f} s; {len(stream.outstanding)} job(s) of {stream.function} outstanding"
        )

    @staticmethod
    def _progress(progress: bool, total: int | None) -> Any:
        if not progress:
            return None
        from tqdm import tqdm

        return tqdm(total=total, unit="job")

    # blocking ----------------------------------------------------------------

    def _socks(self) -> tuple[zmq.Socket[bytes], zmq.Socket[bytes]]:
        if self._sockets is None or self._pid != os.getpid():
            self._pid = os.getpid()
            push = make_socket(zmq.PUSH, hwm=10_000, max_message_bytes=None)
            push.connect(self.pull_address)
            dealer = make_socket(zmq.DEALER, identity=self.client_id)
            # eval() waits in a blocking receive, for at most a heartbeat interval
            dealer.setsockopt(zmq.RCVTIMEO, max(1, int(self.heartbeat_interval_s * 1000)))
            dealer.connect(self.push_address)
            self._sockets = (push, dealer)
        return self._sockets

    def job(
        self,
        function: str,
        iterable: Iterable[bytes],
        messages: int | None = None,
        *,
        ordered: bool = False,
        progress: bool = False,
        errors: str = "raise",
        timeout_s: float | object | None = ...,
        cache: str | None = None,
        extra: dict[str, Any] | None = None,
    ) -> Iterator[Outcome]:
        """Run ``function`` on every payload of ``iterable``; yield results as they come.

        ``messages`` stops after that many items; ``ordered=True`` yields in
        submission order; ``errors='yield'`` yields a :class:`RemoteError` in
        place of a failed result instead of raising it.
        """
        if errors not in ("raise", "yield"):
            raise ConfigError("errors must be 'raise' or 'yield'")
        if cache is not None:
            extra = dict(extra or {}, cache=cache)
        stream = self._stream(function, iterable, messages, ordered, extra=extra)
        total = messages if messages is not None else _length(iterable)
        yield from self._drive(stream, progress, total, errors, timeout_s)

    def eval(
        self,
        function: str,
        payload: bytes,
        *,
        timeout_s: float | object | None = ...,
        cache: str | None = None,
        extra: dict[str, Any] | None = None,
    ) -> bytes:
        """Run ``function`` on one payload and return its result.

        The short way for one job (what an HTTP gateway does per request):
        ``job(function, [payload])`` without the streaming machinery. A failed
        job raises its :class:`RemoteError`.
        """
        if not isinstance(payload, bytes | bytearray | memoryview):
            raise TypeError(f"job payloads must be bytes, got {type(payload).__name__}")
        payload = bytes(payload)
        if len(payload) > self.max_message_bytes:
            raise PayloadTooLarge(len(payload), self.max_message_bytes)
        if cache is not None:
            extra = dict(extra or {}, cache=cache)
        timeout = self.timeout_s if timeout_s is ... else timeout_s
        assert timeout is None or isinstance(timeout, int | float)
        function = self._qualify(function)
        push, dealer = self._socks()
        job_id = next(self._ids)
        message = [Header(Kind.JOB, job_id, self.client_id, function, extra=extra).to_wire()]
        message.append(payload)
        hello_every = self.heartbeat_interval_s
        started = time.monotonic()
        if self.session is None or started - self._hello_at >= hello_every:
            dealer.send_multipart(self._hello())
            self._hello_at = started
        push.send_multipart(message)
        while True:
            try:
                frames = dealer.recv_multipart()
            except zmq.Again:
                frames = []  # a heartbeat interval without anything
            if frames:
                reply: Header | None
                try:
                    reply, rest = decode(frames)
                except ProtocolError:
                    reply, rest = None, []
                if reply is None:
                    pass
                elif reply.kind == Kind.RESULT:
                    # (a result with another id answers an abandoned call)
                    if reply.id == job_id and reply.client == self.client_id:
                        if reply.errors:
                            raise reply.errors[0].to_exception(function)
                        (result,) = jobs_in(reply, rest)
                        return result
                elif self._control(frames):
                    push.send_multipart(message)  # a restarted master lost it
            now = time.monotonic()
            if now - self._hello_at >= hello_every:
                dealer.send_multipart(self._hello())
                self._hello_at = now
            if timeout is not None and now - started > timeout:
                raise TimeoutError(
                    f"no result from master {self.server_name!r} at {self.push_address} for "
                    f"{now - started:.1f} s; 1 job of {function} outstanding"
                )

    def _drive(
        self,
        stream: JobStream,
        progress: bool,
        total: int | None,
        errors: str,
        timeout_s: float | object | None,
    ) -> Iterator[Outcome]:
        timeout = self.timeout_s if timeout_s is ... else timeout_s
        assert timeout is None or isinstance(timeout, int | float)
        push, dealer = self._socks()
        bar = self._progress(progress, total)
        hello_every = self.heartbeat_interval_s
        try:
            # A HELLO per heartbeat interval is enough: it registers this client,
            # collects results kept for it and tells a restarted master (new
            # session) from the old one. Calls in between skip the round trip.
            last_hello = last_progress = time.monotonic()
            if self.session is None or last_hello - self._hello_at >= hello_every:
                dealer.send_multipart(self._hello())
                self._hello_at = last_hello
            else:
                last_hello = self._hello_at
            while not stream.done:
                for message in stream.fill():
                    push.send_multipart(message, copy=False)
                if stream.done:
                    break
                if dealer.poll(int(hello_every * 1000), zmq.POLLIN):
                    for _ in range(256):
                        try:
                            frames = dealer.recv_multipart(zmq.NOBLOCK)
                        except zmq.Again:
                            break
                        try:
                            outcomes = stream.accept(frames)
                        except ProtocolError:
                            continue
                        if not outcomes:
                            if self._control(frames):
                                for message in stream.resend():
                                    push.send_multipart(message)
                            continue
                        last_progress = time.monotonic()
                        if bar is not None:
                            bar.update(len(outcomes))
                        for outcome in outcomes:
                            if isinstance(outcome, RemoteError) and errors == "raise":
                                raise outcome
                            yield outcome
                now = time.monotonic()
                if now - last_hello >= hello_every:
                    dealer.send_multipart(self._hello())
                    last_hello = self._hello_at = now
                if timeout is not None and now - last_progress > timeout:
                    raise self._timeout(stream, now - last_progress)
        finally:
            if bar is not None:
                bar.close()

    def map(
        self,
        fn: Callable[[Any], Any],
        iterable: Iterable[Any],
        *,
        chunksize: int | None = None,
        progress: bool = False,
        timeout_s: float | object | None = ...,
    ) -> list[Any]:
        """``[fn(x) for x in iterable]`` computed by the master's workers, in order."""
        if self.session is None:
            self._greet()
        plan, stream = self._map_stream(fn, iterable, chunksize)
        out: list[Any] = []
        bar = self._progress(progress, plan[0].total)
        try:
            for answer in self._drive(stream, False, None, "raise", timeout_s):
                assert isinstance(answer, bytes)
                results, seconds = mapping.decode_answer(answer, len(out), stream.function)
                plan[0].observe(len(results), seconds)
                out.extend(results)
                if bar is not None:
                    bar.update(len(results))
        finally:
            if bar is not None:
                bar.close()
        return out

    def _map_stream(
        self,
        fn: Callable[[Any], Any],
        iterable: Iterable[Any],
        chunksize: int | None,
        client: bytes | None = None,
    ) -> tuple[list[mapping.ChunkPlanner], JobStream]:
        if self.secret is None:
            raise ConfigError(
                "map ships functions to workers and needs the cluster secret: "
                "pass secret= or set PALM_SECRET (the same on the workers)"
            )
        secret = self.secret
        digest, fn_bytes = mapping.pickle_function(fn)
        workers = max(1, self.workers)
        planner = mapping.ChunkPlanner(_length(iterable), workers, chunksize=chunksize)
        payloads = (
            mapping.encode_chunk(secret, digest, fn_bytes, chunk)
            for chunk in planner.chunks(iterable)
        )
        # Measured chunks last ~20 ms each: a few per worker in flight keep them
        # all busy. Small fixed chunks need many in flight, several per message.
        window, batch = 2 * workers + 2, 1
        if chunksize is not None and chunksize < 64:
            window = max(window, 2048 // chunksize)
            batch = 64 // chunksize
        stream = self._stream(
            mapping.MAP_FUNCTION, payloads, None, True, window=window, batch=batch, client=client
        )
        return [planner], stream

    def _greet(self) -> None:
        """One HELLO/WELCOME round trip to learn the session and worker count."""
        _, dealer = self._socks()
        dealer.send_multipart(self._hello())
        self._hello_at = time.monotonic()
        if dealer.poll(int(max(self.heartbeat_interval_s, 1.0) * 1000), zmq.POLLIN):
            self._control(dealer.recv_multipart())

    # asyncio -------------------------------------------------------------------

    async def ajob(
        self,
        function: str,
        iterable: Iterable[bytes],
        messages: int | None = None,
        *,
        ordered: bool = False,
        errors: str = "raise",
        timeout_s: float | object | None = ...,
    ) -> AsyncIterator[Outcome]:
        """``job()`` for asyncio code: ``async for result in client.ajob(...)``."""
        stream = self._stream(function, iterable, messages, ordered, client=self.async_client_id)
        async for outcome in self._adrive(stream, errors, timeout_s):
            yield outcome

    async def _adrive(
        self, stream: JobStream, errors: str, timeout_s: float | object | None
    ) -> AsyncIterator[Outcome]:
        timeout = self.timeout_s if timeout_s is ... else timeout_s
        assert timeout is None or isinstance(timeout, int | float)
        ctx = zmq.asyncio.Context.instance()
        push = ctx.socket(zmq.PUSH)
        dealer = ctx.socket(zmq.DEALER)
        for sock in (push, dealer):
            sock.setsockopt(zmq.LINGER, 0)
        # a separate identity: the blocking sockets may be connected too
        dealer.setsockopt(zmq.IDENTITY, self.async_client_id)
        push.connect(self.pull_address)
        dealer.connect(self.push_address)
        try:
            await dealer.send_multipart(self._hello(self.async_client_id))
            last_hello = last_progress = time.monotonic()
            while not stream.done:
                for message in stream.fill():
                    await push.send_multipart(message)
                if stream.done:
                    break
                wait_ms = int(self.heartbeat_interval_s * 1000)
                if await dealer.poll(wait_ms, zmq.POLLIN):  # type: ignore[call-arg]
                    frames = await dealer.recv_multipart()
                    try:
                        outcomes = stream.accept(frames)
                    except ProtocolError:
                        continue
                    if not outcomes:
                        if self._control(frames):
                            for message in stream.resend():
                                await push.send_multipart(message)
                        continue
                    last_progress = time.monotonic()
                    for outcome in outcomes:
                        if isinstance(outcome, RemoteError) and errors == "raise":
                            raise outcome
                        yield outcome
                now = time.monotonic()
                if now - last_hello >= self.heartbeat_interval_s:
                    await dealer.send_multipart(self._hello(self.async_client_id))
                    last_hello = now
                if timeout is not None and now - last_progress > timeout:
                    raise self._timeout(stream, now - last_progress)
        finally:
            push.close(0)
            dealer.close(0)

    async def amap(
        self,
        fn: Callable[[Any], Any],
        iterable: Iterable[Any],
        *,
        chunksize: int | None = None,
        timeout_s: float | object | None = ...,
    ) -> list[Any]:
        """``map()`` for asyncio code."""
        if self.session is None:
            await self._agreet()
        plan, stream = self._map_stream(fn, iterable, chunksize, client=self.async_client_id)
        out: list[Any] = []
        async for answer in self._adrive(stream, "raise", timeout_s):
            assert isinstance(answer, bytes)
            results, seconds = mapping.decode_answer(answer, len(out), stream.function)
            plan[0].observe(len(results), seconds)
            out.extend(results)
        return out

    async def _agreet(self) -> None:
        """``_greet`` for asyncio code, on a short-lived socket of its own."""
        ctx = zmq.asyncio.Context.instance()
        dealer = ctx.socket(zmq.DEALER)
        dealer.setsockopt(zmq.LINGER, 0)
        probe_id = uuid.uuid4().bytes  # an identity of its own: it only asks
        dealer.setsockopt(zmq.IDENTITY, probe_id)
        dealer.connect(self.push_address)
        try:
            await dealer.send_multipart(self._hello(probe_id))
            wait_ms = int(max(self.heartbeat_interval_s, 1.0) * 1000)
            if await dealer.poll(wait_ms, zmq.POLLIN):  # type: ignore[call-arg]
                self._control(await dealer.recv_multipart())
        finally:
            dealer.close(0)

    # cache -------------------------------------------------------------------

    def close(self) -> None:
        if self._sockets is not None:
            for sock in self._sockets:
                sock.close(0)
            self._sockets = None
        if self._cache is not None:
            self._cache.close()
            self._cache = None

    def __enter__(self) -> ParallelClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _length(iterable: Iterable[Any]) -> int | None:
    try:
        return len(iterable)  # type: ignore[arg-type]
    except TypeError:
        return None
