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
from collections import deque
from collections.abc import AsyncIterator, Callable, Iterable, Iterator
from typing import Any

import zmq
import zmq.asyncio

from palm.call.base import DEFAULT, DEFAULT_TIMEOUT_S, PairClient, Timeout
from palm.call.jobs import DEFAULT_MAX_BATCH, JobStream, Outcome
from palm.errors import ConfigError, PalmError, ProtocolError, RemoteError, TimeoutError
from palm.wire import arena as shared
from palm.wire import shipping as mapping
from palm.wire.discovery import CacheCalls
from palm.wire.messages import job_message
from palm.wire.protocol import DEFAULT_MAX_MESSAGE_BYTES, Header, Kind, decode, jobs_in
from palm.wire.security import KeysOption
from palm.wire.session import Session
from palm.wire.sockets import more_waiting, recv_frames, send_frames
from palm.wire.vetting import DependencyRetry

__all__ = ["DEFAULT_TIMEOUT_S", "ParallelClient"]

_NOBLOCK = int(zmq.NOBLOCK)


class ParallelClient(PairClient, CacheCalls):
    """A client of a parallel :class:`~palm.serve.master.Master`.

    The blocking calls use the client's sockets and :attr:`session`; the
    asyncio ones open sockets of their own per call, under
    :attr:`async_client_id` and :attr:`async_session`.
    """

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
        max_batch: int = DEFAULT_MAX_BATCH,
        max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES,
        secret: bytes | str | None = None,
        heartbeat_interval_s: float = 1.0,
        keys: KeysOption = None,
        shared_memory: bool | None = None,
    ) -> None:
        super().__init__(
            push_address,
            pull_address,
            db_address,
            server_name,
            timeout_s=timeout_s,
            max_message_bytes=max_message_bytes,
            heartbeat_interval_s=heartbeat_interval_s,
            keys=keys,
            needs="server_name must name the master",
        )
        if shared_memory and not shared.available():
            raise ConfigError("shared_memory=True needs Linux (memfd_create)")
        #: whether large payloads go to workers through shared memory
        #: (:mod:`palm.wire.arena`); by default, when the master is on this machine
        self.shared_memory = (
            shared.available() and mapping.is_loopback(self.pull_address)
            if shared_memory is None
            else shared_memory
        )
        self._arena: shared.Arena | None = None
        self.window = window
        self.batch = batch
        #: what the batches of a stream of fast jobs grow to (a ``batch=`` given to
        #: a call is kept as it is); see :class:`palm.call.jobs.JobStream`
        self.max_batch = max_batch
        #: explicit or PALM_SECRET; with neither, ``map`` takes this user's local
        #: secret when every endpoint is on loopback, else refuses (before connecting)
        self.secret = mapping.resolve_secret(secret)
        #: map answers dropped because they failed authentication (forged, or
        #: from a worker with another secret); logged once per burst
        self.rejected_answers = mapping.RejectCounter(f"client of {server_name!r}")
        # asyncio streams have sockets of their own, so an identity of their own:
        # the master routes results to the socket whose identity is the job's client
        self.async_client_id = uuid.uuid4().bytes
        self.async_session = Session(self.async_client_id, heartbeat_interval_s)
        # digests of the functions map has shipped whole, and in how many chunks
        # (oldest first, bounded)
        self._shipped: dict[bytes, int] = {}
        # the measured time per item of each function's last map, by digest and the
        # shape of its first item (bounded): a map of the same function over items
        # of that shape sizes its first wave from it
        self._item_s: dict[tuple[bytes, object], float] = {}

    @property
    def workers(self) -> int:
        """The master's worker count, as its last WELCOME said."""
        return self.session.workers or self.async_session.workers

    # shared helpers ------------------------------------------------------------

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
        self.ensure_open()
        return JobStream(
            client or self.client_id,
            self.qualify(function),
            iterable,
            ids=self.ids,
            messages=messages,
            ordered=ordered,
            window=window or self.window,
            batch=batch or self.batch,
            max_batch=batch or self.max_batch,
            max_message_bytes=self.max_message_bytes,
            extra=extra,
            arena=self.arena(),
        )

    def arena(self) -> shared.Arena | None:
        """The shared-memory arena large payloads go through (made on first use; a new
        one in a forked child), or None when they go inline."""
        if not self.shared_memory:
            return None
        arena = self._arena
        if arena is None or arena.pid != os.getpid():
            arena = self._arena = shared.Arena()
        return None if arena.refused else arena

    def _release(self) -> None:
        super()._release()
        arena, self._arena = self._arena, None
        if arena is not None:
            arena.close()

    def _timeout(self, function: str, jobs: str, waited_s: float) -> TimeoutError:
        """``jobs``: what is outstanding, ``'1 job'`` or ``'<n> job(s)'``."""
        return TimeoutError(
            f"no result from master {self.server_name!r} at {self.push_address} for "
            f"{waited_s:.1f} s; {jobs} of {function} outstanding"
        )

    def _stalled(self, stream: JobStream, session: Session, waited_s: float) -> PalmError:
        """No genuine result for too long: a timeout, or the forgeries that filled it."""
        if not session.welcomed:
            return self.unwelcomed(stream.function, waited_s)
        error = self._timeout(stream.function, f"{stream.in_flight} job(s)", waited_s)
        if not stream.rejected:
            return error
        return ProtocolError(
            f"no authentic map answer for {waited_s:.1f} s: "
            f"{self.rejected_answers.explain()}; {error}"
        )

    @staticmethod
    def _wait_ms(stream: JobStream, longest_ms: int) -> int:
        return int(stream.retry_wait_s(time.monotonic(), longest_ms / 1000) * 1000)

    @staticmethod
    def _progress(progress: bool, total: int | None) -> Any:
        if not progress:
            return None
        from tqdm import tqdm

        return tqdm(total=total, unit="job")

    # blocking ----------------------------------------------------------------

    def job(
        self,
        function: str,
        iterable: Iterable[bytes],
        messages: int | None = None,
        *,
        ordered: bool = False,
        progress: bool = False,
        errors: str = "raise",
        timeout_s: Timeout = DEFAULT,
        cache: str | None = None,
        extra: dict[str, Any] | None = None,
        batch: int | None = None,
    ) -> Iterator[Outcome]:
        """Run ``function`` on every payload of ``iterable``; yield results as they come.

        ``messages`` stops after that many items; ``ordered=True`` yields in
        submission order; ``errors='yield'`` yields a :class:`RemoteError` in
        place of a failed result instead of raising it. ``batch`` (default: the
        client's) is how many payloads travel in one message, and so come back
        together; without it, a stream of fast jobs grows its batches up to the
        client's ``max_batch`` (:class:`~palm.call.jobs.JobStream` says when).
        Nothing happens before the first result is asked for.
        """
        # the results of a message come as one list: the caller's loop takes them
        # one by one from it, the driver runs once per message, not once per result
        return itertools.chain.from_iterable(
            self._job_batches(
                function,
                iterable,
                messages,
                ordered,
                progress,
                errors,
                timeout_s,
                cache,
                extra,
                batch,
            )
        )

    def _job_batches(
        self,
        function: str,
        iterable: Iterable[bytes],
        messages: int | None,
        ordered: bool,
        progress: bool,
        errors: str,
        timeout_s: Timeout,
        cache: str | None,
        extra: dict[str, Any] | None,
        batch: int | None,
    ) -> Iterator[list[Outcome]]:
        """What :meth:`job` yields, a list of outcomes per message."""
        if errors not in ("raise", "yield"):
            raise ConfigError("errors must be 'raise' or 'yield'")
        if cache is not None:
            extra = dict(extra or {}, cache=cache)
        stream = self._stream(function, iterable, messages, ordered, batch=batch, extra=extra)
        total = messages if messages is not None else _length(iterable)
        yield from self._drive_batches(stream, progress, total, errors, timeout_s)

    def eval(
        self,
        function: str,
        payload: bytes,
        *,
        timeout_s: Timeout = DEFAULT,
        cache: str | None = None,
        extra: dict[str, Any] | None = None,
        request_id: str | None = None,
    ) -> bytes:
        """Run ``function`` on one payload and return its result.

        The short way for one job (what an HTTP gateway does per request):
        ``job(function, [payload])`` without the streaming machinery. A failed
        job raises its :class:`RemoteError`; ``request_id`` goes with the job
        into the workers' logs.
        """
        payload = self.payload(payload)
        if cache is not None:
            extra = dict(extra or {}, cache=cache)
        timeout = self.resolve_timeout(timeout_s)
        function = self.qualify(function)
        push, dealer = self.sockets()
        session = self.session
        job_id = next(self.ids)
        message = job_message(
            self.client_id, job_id, function, [payload], extra=extra, request_ids=[request_id]
        )
        started = time.monotonic()
        if session.hello_due(started):
            dealer.send_multipart(session.hello(started))
        sent = session.welcomed  # else once the first WELCOME names the master
        if sent:
            send_frames(push, message)
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
                elif session.read(reply) and sent:
                    send_frames(push, message)  # a restarted master lost it
            if not sent and session.welcomed:
                send_frames(push, message)
                sent = True
            now = time.monotonic()
            if session.beat_due(now):
                dealer.send_multipart(session.hello(now))
            if timeout is not None and now - started > timeout:
                if not sent:
                    raise self.unwelcomed(function, now - started)
                raise self._timeout(function, "1 job", now - started)

    def _drive_batches(
        self,
        stream: JobStream,
        progress: bool,
        total: int | None,
        errors: str,
        timeout_s: Timeout,
    ) -> Iterator[list[Outcome]]:
        """Drive ``stream`` to its end: the outcomes of each message as they come
        (with ``errors='raise'``, those before a failed one, then its error raised)."""
        timeout = self.resolve_timeout(timeout_s)
        push, dealer = self.sockets()
        session = self.session
        bar = self._progress(progress, total)
        wait_ms = int(session.heartbeat_interval_s * 1000)
        poller = zmq.Poller()  # one for the whole call: Socket.poll makes one per wait
        poller.register(dealer, zmq.POLLIN)
        try:
            last_progress = time.monotonic()
            if session.hello_due(last_progress):
                dealer.send_multipart(session.hello(last_progress))
            while not stream.done:
                if session.welcomed:  # (see eval: jobs go to a master that said WELCOME)
                    for message in stream.fill() + stream.retries(time.monotonic()):
                        send_frames(push, message)
                if stream.done:
                    break
                if poller.poll(self._wait_ms(stream, wait_ms)):
                    for count in range(256):
                        # after the first message, read on only while more wait (see
                        # palm.wire.sockets.more_waiting), and not past the last answer
                        if stream.done or (count == 1 and not more_waiting(dealer)):
                            break
                        try:
                            frames = recv_frames(dealer, _NOBLOCK)
                        except zmq.Again:
                            break
                        outcomes, lost = stream.take(frames, session)
                        for message in lost:
                            push.send_multipart(message)
                        if not outcomes:
                            continue
                        last_progress = time.monotonic()
                        if bar is not None:
                            bar.update(len(outcomes))
                        if stream.clean or errors != "raise":
                            yield outcomes
                            continue
                        for index, outcome in enumerate(outcomes):
                            if isinstance(outcome, RemoteError):
                                if index:
                                    yield outcomes[:index]
                                raise outcome
                        yield outcomes
                now = time.monotonic()
                if session.beat_due(now):
                    dealer.send_multipart(session.hello(now))
                if timeout is not None and now - last_progress > timeout:
                    raise self._stalled(stream, session, now - last_progress)
        except zmq.Again:  # a send timed out: never connected (refused by CURVE?)
            self.recycle()
            outstanding = f"{stream.in_flight} job(s), none could be sent"
            raise self._timeout(stream.function, outstanding, timeout or 0.0) from None
        finally:
            stream.close()
            if bar is not None:
                bar.close()

    def map(
        self,
        fn: Callable[[Any], Any],
        iterable: Iterable[Any],
        *,
        chunksize: int | None = None,
        progress: bool = False,
        on_progress: Callable[[int], None] | None = None,
        timeout_s: Timeout = DEFAULT,
    ) -> list[Any]:
        """``[fn(x) for x in iterable]`` computed by the master's workers, in order.

        Chunks and answers are authenticated with the cluster secret; without
        one, only loopback endpoints are allowed (:class:`ConfigError` else).
        ``progress=True`` shows a progress bar; ``on_progress`` is called with
        the number of results so far each time some arrive. Either way the
        chunks are sized so results arrive from the first item's time on and
        then every few tens of milliseconds per worker.
        """
        self._map_secret()
        if not self.session.welcomed:
            self._greet()
        watched = progress or on_progress is not None
        plan, stream, chunks = self._map_stream(fn, iterable, chunksize, responsive=watched)
        out: list[Any] = []
        bar = self._progress(progress, plan[0].total)
        try:
            answers = self._drive_batches(stream, False, None, "raise", timeout_s)
            for answer in itertools.chain.from_iterable(answers):
                taken = _take_answer(answer, out, plan[0], stream, chunks)
                if bar is not None:
                    bar.update(taken)
                if on_progress is not None:
                    on_progress(len(out))
        finally:
            if bar is not None:
                bar.close()
        self._learn(chunks, plan[0])
        return out

    def _learn(self, chunks: _SentChunks, planner: mapping.ChunkPlanner) -> None:
        """Keep what a finished map measured per item, for the next map of its function;
        after a worker asked for the function, the next map starts with a full chunk."""
        digest = chunks.digest
        if chunks.vet is not None and chunks.vet.shipped_again and digest in self._shipped:
            self._shipped[digest] = min(self._shipped[digest], max(0, self.workers - 1))
        if planner.item_s is None:
            return
        key = (digest, chunks.shape)
        self._item_s.pop(key, None)
        self._item_s[key] = planner.item_s
        while len(self._item_s) > 256:
            del self._item_s[next(iter(self._item_s))]

    def _map_secret(self) -> bytes:
        """The secret ``map`` signs with; a :class:`ConfigError` when there is none."""
        if self.secret is None:
            endpoints = (self.push_address, self.pull_address, self.db_address)
            self.secret = mapping.require_secret(mapping.secret_for(None, endpoints), endpoints)
        return self.secret

    def _map_stream(
        self,
        fn: Callable[[Any], Any],
        iterable: Iterable[Any],
        chunksize: int | None,
        client: bytes | None = None,
        *,
        responsive: bool = False,
    ) -> tuple[list[mapping.ChunkPlanner], JobStream, _SentChunks]:
        secret = self._map_secret()
        digest, fn_bytes = mapping.pickle_function(fn)
        workers = max(1, self.workers)
        shape = _shape(iterable)
        planner = mapping.ChunkPlanner(
            _length(iterable),
            workers,
            chunksize=chunksize,
            responsive=responsive,
            item_s=self._item_s.get((digest, shape)),
        )
        chunks = _SentChunks(secret, digest, shape)
        # the function travels once per worker: with the first chunk each worker
        # may get (one per worker, over one map or more), then by digest only; a
        # worker that lacks it asks, and that chunk goes again with it
        # (DependencyRetry), and the next map starts with a full chunk once more
        # (the master may have handed the full one to a worker that had it)
        full = max(0, workers - self._shipped.pop(digest, 0))
        while len(self._shipped) > 255:
            del self._shipped[next(iter(self._shipped))]
        self._shipped[digest] = workers - full
        payloads = (
            chunks.add(
                mapping.encode_chunk(
                    secret, digest, fn_bytes if n < full and self._full(digest) else b"", chunk
                )
            )
            for n, chunk in enumerate(planner.chunks(iterable))
        )
        # Measured chunks last ~20 ms each: a few per worker in flight keep them
        # all busy, and the whole first wave goes out at once. Small fixed chunks
        # need many in flight, several per message.
        window, batch = max(2 * workers + 2, planner.first_wave + workers), 1
        if chunksize is not None and chunksize < 64:
            window = max(window, 2048 // chunksize)
            batch = 64 // chunksize
        stream = self._stream(
            mapping.MAP_FUNCTION, payloads, None, True, window=window, batch=batch, client=client
        )
        # an answer that fails authentication is no answer: the chunk goes out
        # again until a genuine one comes, or the timeout names the forgeries
        # a chunk refused for want of a package goes out again (another worker
        # may have it) a few times before its DependencyError is the answer
        vet = DependencyRetry(
            secret, 4 * workers + 4, self.rejected_answers.record, {digest: fn_bytes}
        )
        stream.check = vet.check
        stream.on_reject = vet.on_reject
        chunks.vet = vet
        return [planner], stream, chunks

    def _full(self, digest: bytes) -> bool:
        """Count a chunk that carries the function as it goes out (a map may end
        before its first wave does); True."""
        self._shipped[digest] = self._shipped.get(digest, 0) + 1
        return True

    def _greet_wait_ms(self) -> int:
        return int(max(self.heartbeat_interval_s, 1.0) * 1000)

    def _greet(self) -> None:
        """One HELLO/WELCOME round trip to learn the session and worker count."""
        _, dealer = self.sockets()
        dealer.send_multipart(self.session.hello(time.monotonic()))
        if dealer.poll(self._greet_wait_ms(), zmq.POLLIN):
            self.session.welcome(dealer.recv_multipart())

    # asyncio -------------------------------------------------------------------

    async def ajob(
        self,
        function: str,
        iterable: Iterable[bytes],
        messages: int | None = None,
        *,
        ordered: bool = False,
        errors: str = "raise",
        timeout_s: Timeout = DEFAULT,
    ) -> AsyncIterator[Outcome]:
        """``job()`` for asyncio code: ``async for result in client.ajob(...)``."""
        stream = self._stream(function, iterable, messages, ordered, client=self.async_client_id)
        async for outcome in self._adrive(stream, errors, timeout_s):
            yield outcome

    def _async_socket(self, kind: int, identity: bytes | None = None) -> zmq.asyncio.Socket:
        sock = zmq.asyncio.Context.instance().socket(kind)
        sock.setsockopt(zmq.LINGER, 0)
        if self.security is not None:
            self.security.connect(sock)
        if identity is not None:
            sock.setsockopt(zmq.IDENTITY, identity)
        sock.connect(self.pull_address if kind == zmq.PUSH else self.push_address)
        return sock

    async def _adrive(
        self, stream: JobStream, errors: str, timeout_s: Timeout
    ) -> AsyncIterator[Outcome]:
        timeout = self.resolve_timeout(timeout_s)
        self.ensure_open()
        session = self.async_session
        push = self._async_socket(zmq.PUSH)
        # a separate identity: the blocking sockets may be connected too
        dealer = self._async_socket(zmq.DEALER, self.async_client_id)
        wait_ms = int(session.heartbeat_interval_s * 1000)
        try:
            last_progress = time.monotonic()
            await dealer.send_multipart(session.hello(last_progress))
            while not stream.done:
                if session.welcomed:
                    for message in stream.fill() + stream.retries(time.monotonic()):
                        await push.send_multipart(message)
                if stream.done:
                    break
                wait = self._wait_ms(stream, wait_ms)
                if await dealer.poll(wait, zmq.POLLIN):  # type: ignore[call-arg]
                    frames = await dealer.recv_multipart()
                    outcomes, lost = stream.take(frames, session)
                    for message in lost:
                        await push.send_multipart(message)
                    if not outcomes:
                        continue
                    last_progress = time.monotonic()
                    for outcome in outcomes:
                        if isinstance(outcome, RemoteError) and errors == "raise":
                            raise outcome
                        yield outcome
                now = time.monotonic()
                if session.beat_due(now):
                    await dealer.send_multipart(session.hello(now))
                if timeout is not None and now - last_progress > timeout:
                    raise self._stalled(stream, session, now - last_progress)
        finally:
            stream.close()
            push.close(0)
            dealer.close(0)

    async def amap(
        self,
        fn: Callable[[Any], Any],
        iterable: Iterable[Any],
        *,
        chunksize: int | None = None,
        timeout_s: Timeout = DEFAULT,
    ) -> list[Any]:
        """``map()`` for asyncio code."""
        self._map_secret()
        if not self.async_session.welcomed:
            await self._agreet()
        plan, stream, chunks = self._map_stream(
            fn, iterable, chunksize, client=self.async_client_id
        )
        out: list[Any] = []
        async for answer in self._adrive(stream, "raise", timeout_s):
            _take_answer(answer, out, plan[0], stream, chunks)
        self._learn(chunks, plan[0])
        return out

    async def _agreet(self) -> None:
        """``_greet`` for asyncio code, on a short-lived socket of its own."""
        self.ensure_open()
        probe = Session(uuid.uuid4().bytes)  # an identity of its own: it only asks
        dealer = self._async_socket(zmq.DEALER, probe.client_id)
        try:
            await dealer.send_multipart(probe.hello(time.monotonic()))
            if await dealer.poll(self._greet_wait_ms(), zmq.POLLIN):  # type: ignore[call-arg]
                self.async_session.welcome(await dealer.recv_multipart())
        finally:
            dealer.close(0)


class _SentChunks:
    """The chunks of one ``map`` in order, until their answers are decoded."""

    def __init__(self, secret: bytes, digest: bytes = b"", shape: object = None) -> None:
        self.secret = secret
        #: the digest of the function the chunks run
        self.digest = digest
        #: the shape of the map's first item (see :func:`_shape`)
        self.shape = shape
        #: what vets their answers (and counts the chunks sent again in full)
        self.vet: DependencyRetry | None = None
        self._chunks: deque[bytes] = deque()

    def add(self, chunk: bytes) -> bytes:
        self._chunks.append(chunk)
        return chunk

    def next(self) -> bytes:
        return self._chunks.popleft()


def _take_answer(
    answer: object,
    out: list[Any],
    planner: mapping.ChunkPlanner,
    stream: JobStream,
    chunks: _SentChunks,
) -> int:
    """Add a map answer's results to ``out`` (in order) and tell the planner; how many."""
    assert isinstance(answer, bytes)
    results, seconds = mapping.decode_answer(
        answer,
        len(out),
        stream.function,
        secret=chunks.secret,
        chunk=chunks.next(),
        verified=True,  # by the stream, before it handed the answer out
    )
    planner.observe(len(results), seconds)
    out.extend(results)
    return len(results)


def _shape(iterable: Iterable[Any]) -> object:
    """A coarse shape of the first item of a list, tuple or range (None for other inputs).

    The time per item a map measured is kept for the next map of the same function
    over items of the same shape: its type, and the bit length of an int or of a
    sized item's length (one class per power of two). ``factorial`` over 100s and
    over 1000s are two shapes: one's time per item says little about the other's.
    """
    if not isinstance(iterable, (list, tuple, range)) or not iterable:
        return None
    first: Any = iterable[0]
    kind = type(first)
    if kind is int:
        return (kind, abs(first).bit_length())
    try:
        return (kind, len(first).bit_length())
    except Exception:  # no length, or a user's __len__ that fails: the type alone
        return kind


def _length(iterable: Iterable[Any]) -> int | None:
    try:
        return len(iterable)  # type: ignore[arg-type]
    except TypeError:
        return None
