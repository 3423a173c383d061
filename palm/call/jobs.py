"""The bookkeeping of one streaming ``job()`` call, free of any I/O.

:class:`JobStream` takes items from the caller's iterable lazily, packs them
into JOB messages within a window of jobs (and of payload bytes) in flight,
keeps what it sent until the result arrives (so it can send it again after a
master restart), drops duplicate results, and hands back results in arrival
or submission order. The blocking and the asyncio clients drive the same
stream, each with its own sockets.

The books are kept per batch, not per job: a batch whose result comes back
whole, as workers answer them, is retired in one step. Only a batch answered
in part, with errors or with a result the stream's ``check`` must vet, is
split into jobs of its own.
"""

from __future__ import annotations

import itertools
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from palm.errors import ConfigError, PayloadTooLarge, ProtocolError, RemoteError
from palm.wire.arena import REF_BYTES, SHARED_FROM_BYTES, SHARED_KEY, UNREADABLE, Arena, Slot
from palm.wire.messages import job_message
from palm.wire.protocol import Kind, all_bytes, decode, jobs_in
from palm.wire.session import Session

__all__ = [
    "BATCH_BYTES",
    "DEFAULT_MAX_BATCH",
    "DEFAULT_WINDOW_BYTES",
    "GROW_BATCH_S",
    "JobIds",
    "JobStream",
    "Outcome",
    "reserve_ids",
    "take_payloads",
]

#: Payload bytes a stream keeps in flight at most (besides its window of jobs).
DEFAULT_WINDOW_BYTES = 64 * 1024 * 1024

#: A batch closes once its payloads add up to this many bytes: large payloads
#: travel one (or a few) per message, each in a frame of its own, so master and
#: workers pass them on one at a time instead of a whole window's worth at once.
BATCH_BYTES = 1024 * 1024

#: Jobs per message a stream of fast jobs grows its batches to (see :class:`JobStream`).
DEFAULT_MAX_BATCH = 1024

#: A batch doubles (up to ``max_batch``) while one takes at most this long at the
#: stream's pace so far, so a batch of slow jobs never grows past ``batch``.
GROW_BATCH_S = 0.002


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
        payload = _checked(item, max_message_bytes)
        payloads.append(payload)
        size += len(payload)
        if len(payloads) >= count or size >= max_message_bytes // 4:
            return payloads, False
    return payloads, True


def _checked(item: Any, max_message_bytes: int) -> bytes:
    if not isinstance(item, bytes | bytearray | memoryview):
        raise TypeError(f"job payloads must be bytes, got {type(item).__name__}")
    payload = bytes(item)
    if len(payload) > max_message_bytes:
        raise PayloadTooLarge(len(payload), max_message_bytes)
    return payload


class _Source:
    """The caller's items, taken a batch at a time, with room to put some back."""

    def __init__(self, items: Iterator[Any], max_message_bytes: int) -> None:
        self._items = items
        self._back: list[bytes] = []
        self._limit = max_message_bytes

    def take(self, count: int, max_bytes: int) -> tuple[list[bytes], bool, int, int]:
        """Up to ``count`` payloads adding up to less than ``max_bytes`` (at least one),
        whether the items ran out, their size and the largest one's."""
        back = self._back
        if back and type(back[0]) is bytes and max_bytes <= len(back[0]) <= self._limit:
            # a large payload closes its batch alone: no slicing of the rest put back
            # (up to a batch of them, re-sliced and re-checked per message otherwise)
            payload = back.pop(0)
            return [payload], False, len(payload), len(payload)
        if back:
            got, self._back = self._back[:count], self._back[count:]
            got += itertools.islice(self._items, count - len(got))
        else:
            got = list(itertools.islice(self._items, count))
        exhausted = len(got) < count and not self._back
        if not all_bytes(got):  # anything else item by item
            got = [_checked(p, self._limit) for p in got]
        sizes = list(map(len, got))
        size = sum(sizes)
        if size > self._limit or size >= max_bytes:
            total = 0
            for index, length in enumerate(sizes):
                if length > self._limit:
                    raise PayloadTooLarge(length, self._limit)
                total += length
                if total >= max_bytes:  # this one closes the batch, the rest wait
                    self._back = got[index + 1 :] + self._back
                    return got[: index + 1], False, total, max(sizes[: index + 1])
        return got, exhausted, size, max(sizes, default=0)


class JobIds:
    """A client's job ids, from ``start`` on: ``next(ids)`` takes one, :meth:`take`
    a run of consecutive ones (a batch's) in one step. Safe to share between threads."""

    __slots__ = ("_lock", "_next")

    def __init__(self, start: int = 1) -> None:
        self._next = start
        self._lock = threading.Lock()

    def __iter__(self) -> JobIds:
        return self

    def __next__(self) -> int:
        return self.take(1)

    def take(self, count: int) -> int:
        """Reserve ``count`` consecutive ids; return the first."""
        with self._lock:
            first = self._next
            self._next = first + count
        return first


def reserve_ids(ids: Iterator[int], count: int) -> int:
    """Take ``count`` consecutive job ids from ``ids`` (a batch's); return the first."""
    if type(ids) is JobIds:
        return ids.take(count)
    first = next(ids)
    if count > 1:
        deque(itertools.islice(ids, count - 1), maxlen=0)  # consumed in C
    return first


#: A result as the stream hands it back: payload bytes or the error for that job.
Outcome = bytes | RemoteError


class JobStream:
    """State of one ``job()`` call.

    ``messages`` caps how many items are taken from ``iterable`` (and so how
    many results there will be); ``window`` caps jobs in flight and
    ``window_bytes`` their payload bytes (a message is sent while fewer are in
    flight, so at most ``window_bytes`` plus one message's worth, itself under
    :data:`BATCH_BYTES` plus its last payload); ``batch``
    caps jobs per message. With ``max_batch`` above ``batch`` the cap grows:
    the stream looks at its pace (elapsed time per result) over spans of at
    least four batches' results and :data:`GROW_BATCH_S`, each span starting
    where the last ended (the first with the first message), and doubles the
    cap (up to ``max_batch``) after a span in which a batch took at most
    :data:`GROW_BATCH_S`. Fast jobs so travel in fewer, larger messages (a
    message costs every process the same whatever it carries) soon after a
    slow start (a stall while processes start, a busy machine) is over, while
    slow jobs keep batches of ``batch`` and spread over the workers as before:
    results that come in a burst are paced with the wait before them. A
    ``window`` of several batches grows with them (so by ``max_batch / batch``
    at most), keeping as many messages in flight.

    ``check(sent, answer)``, when given, vets every successful result against
    the payload it answers: a result it rejects is no result. The job stays
    outstanding and :meth:`retries` sends it again: at once the first time,
    then after ``retry_initial_s``, doubling up to ``retry_max_s``;
    ``on_reject(answer)`` hears of each rejection. A ``check`` that returns
    bytes instead says the answer asks for another payload (a map chunk with
    its function's bytes): the job is sent again at once with those bytes.

    With an ``arena`` (:mod:`palm.wire.arena`), a message whose payloads are all
    at least :data:`~palm.wire.arena.SHARED_FROM_BYTES` carries references to
    them in the arena instead; their slots are freed as their jobs are answered,
    and by :meth:`close` when the call ends. A job a worker could not read
    that way is sent again inline, and the arena is used no more.
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
        window_bytes: int = DEFAULT_WINDOW_BYTES,
        batch: int = 64,
        max_batch: int | None = None,
        max_message_bytes: int,
        extra: dict[str, Any] | None = None,
        pipeline: bytes | None = None,
        check: Callable[[bytes, bytes], bool | bytes] | None = None,
        on_reject: Callable[[bytes], None] | None = None,
        arena: Arena | None = None,
    ) -> None:
        if messages is not None and messages < 0:
            raise ConfigError("messages must be zero or more")
        if window < 1 or batch < 1 or window_bytes < 1:
            raise ConfigError("window, window_bytes and batch must be at least 1")
        self.client = client
        self.function = function
        source = iter(iterable)
        if messages is not None:
            source = itertools.islice(source, messages)
        self._source = _Source(source, max_message_bytes)
        self.exhausted = messages == 0
        self.ordered = ordered
        self.window = window
        self.window_bytes = window_bytes
        self.batch = batch
        self.max_batch = max(batch, max_batch or batch)
        # where the span the stream paces itself over began: (monotonic time,
        # results by then); None until the first message is made
        self._span: tuple[float, int] | None = None
        self.max_message_bytes = max_message_bytes
        self.extra = extra
        self.pipeline = pipeline
        self._ids = ids
        # whole batches in flight: first job id -> (payloads, submission position
        # of the first, their bytes); and jobs of batches split up: id -> (payload,
        # position)
        self._batches: dict[int, tuple[list[bytes], int, int]] = {}
        self._loose: dict[int, tuple[bytes, int]] = {}
        self._count = 0
        self._bytes = 0
        self.sent = 0
        self.received = 0
        # ordered delivery: results parked by submission position
        self._parked: dict[int, Outcome] = {}
        self._next_position = 0
        self._taken = 0
        self.check = check
        self.on_reject = on_reject
        #: results ``check`` rejected
        self.rejected = 0
        #: whether the last accepted message brought results only (no errors)
        self.clean = True
        # rejected job id -> (times rejected, monotonic time it is due again)
        self._retry: dict[int, tuple[int, float | None]] = {}
        self.arena = arena
        # job id -> the arena slot its payload was sent in, until it is answered
        self._slots: dict[int, Slot] = {}

    @property
    def outstanding(self) -> dict[int, bytes]:
        """Job id -> payload of every job sent and not yet answered (a copy)."""
        out = {job_id: payload for job_id, (payload, _) in self._loose.items()}
        for first, (payloads, _, _) in self._batches.items():
            out.update(zip(itertools.count(first), payloads, strict=False))
        return out

    @property
    def in_flight(self) -> int:
        """How many jobs are sent and not yet answered."""
        return self._count

    @property
    def done(self) -> bool:
        return self.exhausted and not self._count and not self._parked

    def fill(self) -> list[list[bytes]]:
        """Messages to send now to top the window up (possibly none)."""
        out: list[list[bytes]] = []
        quarter = self.max_message_bytes // 4
        if self.batch < self.max_batch:
            self._grow()
        while not self.exhausted:
            room = self.window - self._count
            room_bytes = self.window_bytes - self._bytes
            if room <= 0 or room_bytes <= 0:
                break
            payloads, self.exhausted, size, largest = self._source.take(
                min(room, self.batch), min(quarter, room_bytes, BATCH_BYTES)
            )
            if not payloads:
                break
            out.append(self._message(payloads, size, largest))
        return out

    def _grow(self) -> None:
        """Double ``batch`` (up to ``max_batch``) when a batch was quick at the pace
        of the span that ends now (a span ends after four batches' results and
        :data:`GROW_BATCH_S`; the next starts here)."""
        now = time.monotonic()
        if self._span is None:
            self._span = (now, self.received)
            return
        since, before = self._span
        done = self.received - before
        if done < 4 * self.batch or now - since < GROW_BATCH_S:
            return
        self._span = (now, self.received)
        if (now - since) / done * self.batch * 2 <= GROW_BATCH_S:
            grown = min(self.max_batch, self.batch * 2)
            # as many messages in flight as before: each costs every process a
            # wake-up, and a window of a few large ones leaves them waiting
            if self.window >= 2 * self.batch:
                self.window = self.window * grown // self.batch
            self.batch = grown

    def _message(self, payloads: list[bytes], size: int, largest: int) -> list[bytes]:
        first = reserve_ids(self._ids, len(payloads))
        self._batches[first] = (payloads, self._taken, size)
        self._taken += len(payloads)
        self._count += len(payloads)
        self._bytes += size
        self.sent += len(payloads)
        if self.arena is not None and largest >= SHARED_FROM_BYTES:
            shared = self._shared(first, payloads)
            if shared is not None:
                return shared
        return job_message(
            self.client,
            first,
            self.function,
            payloads,
            pipeline=self.pipeline,
            extra=self.extra,
            largest=largest,
        )

    def _shared(self, first: int, payloads: list[bytes]) -> list[bytes] | None:
        """The message for ``payloads`` as references into the arena, when they are all
        large and fit; None to send them inline."""
        arena = self.arena
        if arena is None or arena.refused or min(map(len, payloads)) < SHARED_FROM_BYTES:
            return None
        refs: list[bytes] = []
        for offset, payload in enumerate(payloads):
            put = arena.put(payload)
            if put is None:  # full: this message goes inline
                for job_id in range(first, first + offset):
                    arena.free(self._slots.pop(job_id))
                return None
            refs.append(put[0])
            self._slots[first + offset] = put[1]
        return job_message(
            self.client,
            first,
            self.function,
            refs,
            pipeline=self.pipeline,
            extra=dict(self.extra or {}, **{SHARED_KEY: 1}),
            largest=REF_BYTES,
        )

    def _free(self, first: int, count: int) -> None:
        """Free the arena slots of jobs ``first`` .. ``first + count - 1`` (answered)."""
        if self._slots and self.arena is not None:
            for job_id in range(first, first + count):
                slot = self._slots.pop(job_id, None)
                if slot is not None:
                    self.arena.free(slot)

    def close(self) -> None:
        """The call is over: free the arena slots of the jobs still unanswered."""
        slots, self._slots = self._slots, {}
        if self.arena is not None:
            for slot in slots.values():
                self.arena.free(slot)

    def _one(self, job_id: int, payload: bytes) -> list[bytes]:
        return job_message(
            self.client, job_id, self.function, [payload], pipeline=self.pipeline, extra=self.extra
        )

    def _split(self, job_id: int) -> None:
        """Put the jobs of the whole batch holding ``job_id`` (if any) on the loose books."""
        for first, (payloads, position, _) in self._batches.items():
            if first <= job_id < first + len(payloads):
                del self._batches[first]
                for offset, payload in enumerate(payloads):
                    self._loose[first + offset] = (payload, position + offset)
                return

    def retries(self, now: float) -> list[list[bytes]]:
        """Rejected jobs due to be sent again at ``now`` (monotonic seconds), as messages."""
        out: list[list[bytes]] = []
        for job_id, (times, due) in list(self._retry.items()):
            if job_id not in self._loose:
                del self._retry[job_id]
                continue
            if due is None:  # the first time at once, then later and later
                delay = 0.0 if times == 1 else self.retry_initial_s * 2 ** (times - 2)
                due = now + min(self.retry_max_s, delay)
                self._retry[job_id] = (times, due)
            if due <= now:
                self._retry[job_id] = (times, float("inf"))
                out.append(self._one(job_id, self._loose[job_id][0]))
        return out

    def retry_wait_s(self, now: float, longest_s: float) -> float:
        """How long a driver may wait for results before :meth:`retries` has work."""
        if not self._retry:
            return longest_s
        dues = [0.0 if due is None else due - now for _, due in self._retry.values()]
        return max(0.0, min([longest_s, *dues]))

    def resend(self) -> list[list[bytes]]:
        """Every job still outstanding, as messages, for a master that lost them."""
        return [self._one(job_id, payload) for job_id, payload in sorted(self.outstanding.items())]

    def accept(self, frames: list[bytes]) -> list[Outcome]:
        """Take a RESULT message; return the outcomes ready to hand to the caller."""
        header, frames_in = decode(frames)
        if header.kind != Kind.RESULT:
            return []
        payloads = jobs_in(header, frames_in)
        self.clean = True
        whole = self._batches.get(header.id)
        if (
            whole is not None
            and len(whole[0]) == len(payloads)
            and not header.errors
            and self.check is None
        ):  # the common case: a whole batch answered, retired in one step
            del self._batches[header.id]
            count = len(payloads)
            if self._slots:
                self._free(header.id, count)
            self._count -= count
            self._bytes -= whole[2]
            self.received += count
            if not self.ordered:
                return list(payloads)
            position = whole[1]
            if position == self._next_position and not self._parked:
                self._next_position += count
                return list(payloads)
            self._parked.update(zip(itertools.count(position), payloads, strict=False))
            return self._release()
        return self._accept_each(header.id, header.errors, payloads)

    def _accept_each(self, first: int, errors_in: Any, payloads: list[bytes]) -> list[Outcome]:
        errors = {e.offset: e for e in errors_in or ()}
        ready: list[Outcome] = []
        for offset, payload in enumerate(payloads):
            job_id = first + offset
            if job_id not in self._loose:
                self._split(job_id)
            entry = self._loose.get(job_id)
            if entry is None:
                continue  # a duplicate, or an answer to an abandoned call
            sent, position = entry
            info = errors.get(offset)
            if info is not None and info.type == UNREADABLE and job_id in self._slots:
                # the worker cannot reach the arena: inline, at once, and from now on
                self._free(job_id, 1)
                if self.arena is not None:
                    self.arena.refused = True
                self._retry[job_id] = (1, None)
                continue
            verdict = True if info is not None or self.check is None else self.check(sent, payload)
            if verdict is not True:
                if type(verdict) is bytes:  # not an answer: send this in its place, at once
                    self._loose[job_id] = (verdict, position)
                    self._bytes += len(verdict) - len(sent)
                    self._retry[job_id] = (1, None)
                    continue
                self.rejected += 1
                times = self._retry.get(job_id, (0, None))[0] + 1
                self._retry[job_id] = (times, None)
                if self.on_reject is not None:
                    self.on_reject(payload)
                continue
            del self._loose[job_id]
            self._retry.pop(job_id, None)
            if self._slots:
                self._free(job_id, 1)
            self._count -= 1
            self._bytes -= len(sent)
            self.received += 1
            outcome: Outcome = payload if info is None else info.to_exception(self.function)
            if not self.ordered:
                ready.append(outcome)
            else:
                self._parked[position] = outcome
        if self.ordered:
            return self._release()
        self.clean = not errors
        return ready

    def _release(self) -> list[Outcome]:
        """Parked results now due in submission order."""
        ready: list[Outcome] = []
        while self._next_position in self._parked:
            ready.append(self._parked.pop(self._next_position))
            self._next_position += 1
        self.clean = not any(isinstance(outcome, RemoteError) for outcome in ready)
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
        return min([*self._loose, *self._batches], default=None)
