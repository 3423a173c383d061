"""The bookkeeping of one streaming ``job()`` call, free of any I/O.

:class:`JobStream` takes items from the caller's iterable lazily, packs them
into JOB messages within a window of jobs in flight, keeps what it sent until
the result arrives (so it can send it again after a master restart), drops
duplicate results, and hands back results in arrival or submission order.
The blocking and the asyncio clients drive the same stream, each with its own
sockets.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from palm.errors import ConfigError, PayloadTooLarge, ProtocolError, RemoteError
from palm.wire.messages import job_message
from palm.wire.protocol import Kind, decode, jobs_in
from palm.wire.session import Session

__all__ = ["JobStream", "Outcome", "reserve_ids", "take_payloads"]


def take_payloads(
    source: Iterator[Any], count: int, max_message_bytes: int
) -> tuple[list[bytes], bool]:
    """The next payloads of a batch, and whether ``source`` ran out.

    Takes up to ``count`` items, fewer once they add up to a quarter of
    ``max_message_bytes``; each must be bytes-like and within the limit.
    """
    payloads: list[bytes] = []
    size = 0
    for item in source:
        if not isinstance(item, bytes | bytearray | memoryview):
            raise TypeError(f"job payloads must be bytes, got {type(item).__name__}")
        payload = bytes(item)
        if len(payload) > max_message_bytes:
            raise PayloadTooLarge(len(payload), max_message_bytes)
        payloads.append(payload)
        size += len(payload)
        if len(payloads) >= count or size >= max_message_bytes // 4:
            return payloads, False
    return payloads, True


def reserve_ids(ids: Iterator[int], count: int) -> int:
    """Take ``count`` consecutive job ids from ``ids`` (a batch's); return the first."""
    first = next(ids)
    for _ in range(count - 1):
        next(ids)
    return first


#: A result as the stream hands it back: payload bytes or the error for that job.
Outcome = bytes | RemoteError


class JobStream:
    """State of one ``job()`` call.

    ``messages`` caps how many items are taken from ``iterable`` (and so how
    many results there will be); ``window`` caps jobs in flight; ``batch``
    caps jobs per message.

    ``check(sent, answer)``, when given, vets every successful result against
    the payload it answers: a result it rejects is no result. The job stays
    outstanding and :meth:`retries` sends it again: at once the first time,
    then after ``retry_initial_s``, doubling up to ``retry_max_s``;
    ``on_reject(answer)`` hears of each rejection.
    """

    #: first delay before sending a rejected job again; doubles per rejection
    retry_initial_s = 0.01
    retry_max_s = 1.0

    def __init__(
        self,
        client: bytes,
        function: str,
        iterable: Iterable[bytes],
        *,
        ids: Iterator[int],
        messages: int | None = None,
        ordered: bool = False,
        window: int = 2_000,
        batch: int = 64,
        max_message_bytes: int,
        extra: dict[str, Any] | None = None,
        pipeline: bytes | None = None,
        check: Callable[[bytes, bytes], bool] | None = None,
        on_reject: Callable[[bytes], None] | None = None,
    ) -> None:
        if messages is not None and messages < 0:
            raise ConfigError("messages must be zero or more")
        if window < 1 or batch < 1:
            raise ConfigError("window and batch must be at least 1")
        self.client = client
        self.function = function
        source = iter(iterable)
        self._source = itertools.islice(source, messages) if messages is not None else source
        self.exhausted = messages == 0
        self.ordered = ordered
        self.window = window
        self.batch = batch
        self.max_message_bytes = max_message_bytes
        self.extra = extra
        self.pipeline = pipeline
        self._ids = ids
        self.outstanding: dict[int, bytes] = {}
        self.sent = 0
        self.received = 0
        # ordered delivery: job id -> submission position, and results parked
        self._position: dict[int, int] = {}
        self._parked: dict[int, Outcome] = {}
        self._next_position = 0
        self._taken = 0
        self.check = check
        self.on_reject = on_reject
        #: results ``check`` rejected
        self.rejected = 0
        # rejected job id -> (times rejected, monotonic time it is due again)
        self._retry: dict[int, tuple[int, float | None]] = {}

    @property
    def done(self) -> bool:
        return self.exhausted and not self.outstanding and not self._parked

    def fill(self) -> list[list[bytes]]:
        """Messages to send now to top the window up (possibly none)."""
        out: list[list[bytes]] = []
        while not self.exhausted:
            room = self.window - len(self.outstanding)
            if room <= 0:
                break
            payloads, self.exhausted = take_payloads(
                self._source, min(room, self.batch), self.max_message_bytes
            )
            if not payloads:
                break
            out.append(self._message(payloads))
        return out

    def _message(self, payloads: list[bytes]) -> list[bytes]:
        first = reserve_ids(self._ids, len(payloads))
        for offset, payload in enumerate(payloads):
            self.outstanding[first + offset] = payload
            if self.ordered:
                self._position[first + offset] = self._taken
            self._taken += 1
        self.sent += len(payloads)
        return job_message(
            self.client, first, self.function, payloads, pipeline=self.pipeline, extra=self.extra
        )

    def _one(self, job_id: int, payload: bytes) -> list[bytes]:
        return job_message(
            self.client, job_id, self.function, [payload], pipeline=self.pipeline, extra=self.extra
        )

    def retries(self, now: float) -> list[list[bytes]]:
        """Rejected jobs due to be sent again at ``now`` (monotonic seconds), as messages."""
        out: list[list[bytes]] = []
        for job_id, (times, due) in list(self._retry.items()):
            if job_id not in self.outstanding:
                del self._retry[job_id]
                continue
            if due is None:  # the first time at once, then later and later
                delay = 0.0 if times == 1 else self.retry_initial_s * 2 ** (times - 2)
                due = now + min(self.retry_max_s, delay)
                self._retry[job_id] = (times, due)
            if due <= now:
                self._retry[job_id] = (times, float("inf"))
                out.append(self._one(job_id, self.outstanding[job_id]))
        return out

    def retry_wait_s(self, now: float, longest_s: float) -> float:
        """How long a driver may wait for results before :meth:`retries` has work."""
        dues = [0.0 if due is None else due - now for _, due in self._retry.values()]
        return max(0.0, min([longest_s, *dues]))

    def resend(self) -> list[list[bytes]]:
        """Every job still outstanding, as messages, for a master that lost them."""
        out: list[list[bytes]] = []
        for job_id, payload in sorted(self.outstanding.items()):
            out.append(
                job_message(
                    self.client,
                    job_id,
                    self.function,
                    [payload],
                    pipeline=self.pipeline,
                    extra=self.extra,
                )
            )
        return out

    def accept(self, frames: list[bytes]) -> list[Outcome]:
        """Take a RESULT message; return the outcomes ready to hand to the caller."""
        header, frames_in = decode(frames)
        if header.kind != Kind.RESULT:
            return []
        payloads = jobs_in(header, frames_in)
        errors = {e.offset: e for e in header.errors or ()}
        ready: list[Outcome] = []
        for offset, payload in enumerate(payloads):
            job_id = header.id + offset
            sent = self.outstanding.get(job_id)
            if sent is None:
                continue  # a duplicate, or an answer to an abandoned call
            info = errors.get(offset)
            if info is None and self.check is not None and not self.check(sent, payload):
                self.rejected += 1
                times = self._retry.get(job_id, (0, None))[0] + 1
                self._retry[job_id] = (times, None)
                if self.on_reject is not None:
                    self.on_reject(payload)
                continue
            del self.outstanding[job_id]
            self._retry.pop(job_id, None)
            self.received += 1
            outcome: Outcome = payload if info is None else info.to_exception(self.function)
            if not self.ordered:
                ready.append(outcome)
                continue
            self._parked[self._position.pop(job_id)] = outcome
        if self.ordered:
            while self._next_position in self._parked:
                ready.append(self._parked.pop(self._next_position))
                self._next_position += 1
        return ready

    def take(
        self, frames: list[bytes], session: Session
    ) -> tuple[list[Outcome], list[list[bytes]]]:
        """A message on the result socket: the outcomes it brings, and the messages
        to send again when it is the WELCOME of a restarted master (``session``'s)."""
        try:
            outcomes = self.accept(frames)
        except ProtocolError:
            return [], []
        if outcomes or not session.welcome(frames):
            return outcomes, []
        return [], self.resend()

    def first_outstanding(self) -> int | None:
        return min(self.outstanding) if self.outstanding else None
