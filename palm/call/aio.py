"""One parallel client for all the coroutines of an event loop, one job per call.

An asyncio program (an ASGI app, a websocket server) that runs one job per
request awaits :meth:`AsyncSharedClient.eval`::

    client = AsyncSharedClient(push_address, pull_address, db_address, 'server')
    result = await client.eval('foo', b'a message')

The calls made during one turn of the event loop are sent together when the
turn ends (one message per function, consecutive job ids, packed); alone, a
call is sent at once (a client's first calls wait for the master's first
WELCOME, see :mod:`palm.wire.session`). While ``batches_out`` batches (1 by
default) are still out, new calls wait until one of them is answered (at
most ``hold_s``, 2 ms by default) and then go together:
under load a message carries as many jobs as requests arrived during a round
trip, so the master, the workers and the sockets handle a message per batch,
not per request (Nagle's rule, self-clocked by the answers). Results are
read when the result socket becomes readable; nothing blocks the loop and no thread is involved.

Like :class:`~palm.call.shared.SharedClient`, a restarted master (a new
session in its WELCOME) gets every job still outstanding again, and a result
for a call that gave up (timed out or cancelled) is dropped.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any, cast

import zmq

from palm.call.base import DEFAULT, ClientState, Timeout
from palm.call.shared import OneJobCalls
from palm.errors import ClientClosed

__all__ = ["BATCHES_OUT", "AsyncSharedClient"]

_NOBLOCK = int(zmq.NOBLOCK)
_EVENTS = int(zmq.EVENTS)
_POLLIN = int(zmq.POLLIN)

#: Batches a client keeps out before new calls wait for answers (``batches_out``).
BATCHES_OUT = 1


class _Call:
    __slots__ = (
        "batch", "clock", "function", "future", "job_id", "payload", "request_id", "timeout"
    )  # fmt: skip

    def __init__(
        self,
        function: str,
        payload: bytes,
        request_id: str | None,
        future: asyncio.Future[bytes],
        timeout: float | None,
    ) -> None:
        self.function = function
        self.payload = payload
        self.request_id = request_id
        self.future = future
        self.timeout = timeout
        self.job_id = 0
        self.batch = 0
        self.clock: _Clock | None = None


class _Clock:
    """The timeout timer of the calls of one batch that have the same timeout.

    One timer per batch, not one per call: under load a batch holds tens of calls,
    and a timer costs about as much as the rest of a call's bookkeeping. It is
    cancelled when the last of its calls is answered or given up.
    """

    __slots__ = ("calls", "pending", "timer")

    def __init__(self, calls: list[_Call]) -> None:
        self.calls = calls
        self.pending = len(calls)
        self.timer: asyncio.TimerHandle | None = None

    def done_with(self) -> None:
        """One of the calls is answered or given up."""
        self.pending -= 1
        if self.pending == 0 and self.timer is not None:
            self.timer.cancel()
            self.timer = None
            self.calls = []


class AsyncSharedClient(OneJobCalls):
    """A client of a parallel master for the coroutines of one event loop.

    The sockets are made on the first call, in the running loop, and belong
    to it: use one instance per loop (and per process). ``max_batch`` caps the
    jobs in one message; while ``batches_out`` batches are out, new calls wait
    for one of them to be answered, at most ``hold_s`` (0: never wait);
    ``timeout_s``, ``heartbeat_interval_s`` and ``max_message_bytes`` are as
    for a :class:`~palm.call.parallel.ParallelClient`.
    """

    def __init__(
        self,
        push_address: str,
        pull_address: str,
        db_address: str | None,
        server_name: str,
        *,
        hold_s: float = 0.002,
        batches_out: int = BATCHES_OUT,
        **options: Any,
    ) -> None:
        super().__init__(push_address, pull_address, db_address, server_name, **options)
        if batches_out < 1:
            raise ValueError(f"batches_out must be at least 1, not {batches_out}")
        self.hold_s = hold_s
        self.batches_out = batches_out
        self._loop: asyncio.AbstractEventLoop | None = None
        self._push: zmq.Socket[bytes] | None = None
        self._dealer: zmq.Socket[bytes] | None = None
        self._queued: list[_Call] = []
        self._unsent: list[list[bytes]] = []
        self._outstanding: dict[int, _Call] = {}
        self._flushing = False
        self._ticker: asyncio.TimerHandle | None = None
        self._hold: asyncio.TimerHandle | None = None
        self._batch = 0  # the number of the last batch sent
        self._out_batches: dict[int, int] = {}  # batch number -> its calls not answered yet

    @property
    def outstanding(self) -> int:
        """Calls sent or queued and not yet answered."""
        return len(self._outstanding) + len(self._queued)

    def _start(self) -> asyncio.AbstractEventLoop:
        loop = asyncio.get_running_loop()
        if self._loop is not None:
            if self._loop is not loop:
                raise RuntimeError("the client belongs to the event loop of its first call")
            return loop
        self._push, self._dealer = self.sockets()
        self._loop = loop
        loop.add_reader(self._dealer.fileno(), self._drain)
        return loop

    async def eval(
        self,
        function: str,
        payload: bytes,
        *,
        request_id: str | None = None,
        timeout_s: Timeout = DEFAULT,
    ) -> bytes:
        """Run ``function`` on one payload and return its result.

        ``request_id`` goes with the job into the workers' logs. A failed job
        raises its :class:`~palm.errors.RemoteError`; no result within
        ``timeout_s`` raises :class:`~palm.errors.TimeoutError`.
        """
        payload = self.payload(payload)
        timeout = self.resolve_timeout(timeout_s)
        self.ensure_open()
        loop = self._start()
        call = _Call(self.qualify(function), payload, request_id, loop.create_future(), timeout)
        self._queued.append(call)
        if not self._flushing:
            self._flushing = True
            if len(self._out_batches) >= self.batches_out and self.hold_s > 0:
                # answers are due: the first batch fully answered sends this one
                self._hold = loop.call_later(self.hold_s, self._flush)
            else:
                loop.call_soon(self._flush)
        try:
            return await call.future
        finally:
            if not call.future.done() or call.future.cancelled():
                self._forget(call)

    # the loop's side -------------------------------------------------------------

    def _flush(self) -> None:
        """Send what this turn of the loop queued (and say HELLO when due)."""
        self._flushing = False
        if self._hold is not None:
            self._hold.cancel()
            self._hold = None
        if self.closed:
            return
        batch, self._queued = self._queued, []
        self._number(batch, self._outstanding)
        self._batch += 1
        self._out_batches[self._batch] = len(batch)
        for call in batch:
            call.batch = self._batch
        self._clock(batch)
        now = time.monotonic()
        if self.session.hello_due(now):
            self._hello(now)
        if self.session.welcomed:  # else all go at the first WELCOME (see _take)
            self._send(self._messages(batch))
        if self._ticker is None and self._outstanding:
            assert self._loop is not None
            self._ticker = self._loop.call_later(self.heartbeat_interval_s, self._tick)

    def _clock(self, batch: list[_Call]) -> None:
        """Start the timeout of the calls of ``batch``: one timer per distinct timeout
        (the calls of a gateway all have the same). A call's timeout counts from the
        turn of the loop that sends it (at most ``hold_s`` after the call)."""
        assert self._loop is not None
        groups: dict[float, list[_Call]] = {}
        for call in batch:
            if call.timeout is not None:
                groups.setdefault(call.timeout, []).append(call)
        for timeout, calls in groups.items():
            clock = _Clock(calls)
            for call in calls:
                call.clock = clock
            clock.timer = self._loop.call_later(timeout, self._expire, clock, timeout)

    def _send(self, messages: list[list[bytes]]) -> None:
        if self._push is None or self._loop is None:
            return  # closed
        self._unsent.extend(messages)
        while self._unsent:
            try:
                self._push.send_multipart(self._unsent[0], zmq.NOBLOCK)
            except zmq.Again:  # the master's queue is full: try again shortly
                self._loop.call_later(0.01, self._send, [])
                return
            self._unsent.pop(0)

    def _hello(self, now: float) -> None:
        assert self._dealer is not None and self._loop is not None
        try:
            self._dealer.send_multipart(self.session.hello(now), zmq.NOBLOCK)
        except zmq.Again:
            return
        # a send may consume the socket's readiness edge: look for input now
        self._loop.call_soon(self._drain)

    def _tick(self) -> None:
        """Once per heartbeat interval while calls are outstanding: HELLO."""
        self._ticker = None
        if self.closed or not self._outstanding:
            return
        now = time.monotonic()
        # (the timer may fire a little early)
        if self.session.beat_due(now, early_s=0.1 * self.heartbeat_interval_s):
            self._hello(now)
        assert self._loop is not None
        self._ticker = self._loop.call_later(self.heartbeat_interval_s, self._tick)

    def _drain(self) -> None:
        """Read every message waiting on the result socket."""
        dealer = self._dealer
        if dealer is None or self.closed:
            return
        try:
            frames = dealer.recv_multipart(_NOBLOCK)
        except zmq.Again:
            return  # (the reader fires for the socket's own signals too)
        while True:
            self._take(frames)
            if self._dealer is not dealer:
                return  # closed by what the message answered
            # read to the end when the socket says so: a getsockopt costs far less
            # than the zmq.Again a receive that finds nothing raises, and it also
            # rearms the edge-triggered fd the reader waits on
            if not cast(int, dealer.get(_EVENTS)) & _POLLIN:
                return
            try:
                frames = dealer.recv_multipart(_NOBLOCK)
            except zmq.Again:
                return

    def _take(self, frames: list[bytes]) -> None:
        results, send_all = self._read(frames)
        if send_all:  # the first WELCOME, or a restarted master that lost what it held
            self._send(self._resend(self._outstanding.values()))
            return
        for job_id, payload, error in results:
            call = self._outstanding.pop(job_id, None)
            if call is None or call.future.done():
                continue  # the answer to a call that gave up
            self._answered(call)
            if error is None:
                call.future.set_result(payload)
            else:
                call.future.set_exception(error.to_exception(call.function))

    def _expire(self, clock: _Clock, timeout_s: float) -> None:
        clock.timer = None
        for call in clock.calls:
            if not call.future.done():
                self._forget(call)
                call.future.set_exception(self._timeout(call.function, timeout_s))

    def _answered(self, call: _Call) -> None:
        """``call`` is done with: when it was the last of the batch out, send the next."""
        if call.clock is not None:
            call.clock.done_with()
            call.clock = None
        left = self._out_batches.get(call.batch)
        if left is not None:
            if left > 1:
                self._out_batches[call.batch] = left - 1
                return
            del self._out_batches[call.batch]
            if self._hold is not None:
                self._hold.cancel()
                self._hold = None
                assert self._loop is not None
                self._loop.call_soon(self._flush)

    def _forget(self, call: _Call) -> None:
        if self._outstanding.get(call.job_id) is call:
            del self._outstanding[call.job_id]
            self._answered(call)
        try:
            self._queued.remove(call)
        except ValueError:
            pass

    def close(self) -> None:
        """Close the sockets; calls still waiting fail with
        :class:`~palm.errors.ClientClosed` (a ``RuntimeError``), later ones too.

        Call it from the loop's thread (or once the loop has stopped).
        """
        if self.closed:
            return
        self.state = ClientState.CLOSED
        for timer in (self._ticker, self._hold):
            if timer is not None:
                timer.cancel()
        self._ticker = self._hold = None
        waiting = [*self._outstanding.values(), *self._queued]
        self._outstanding.clear()
        self._queued.clear()
        for call in waiting:
            if call.clock is not None and call.clock.timer is not None:
                call.clock.timer.cancel()
                call.clock.timer = None
            if not call.future.done():
                call.future.set_exception(ClientClosed("the client was closed"))
        if self._dealer is not None and self._loop is not None and not self._loop.is_closed():
            self._loop.remove_reader(self._dealer.fileno())
        self._dealer = self._push = None
        self._release()
