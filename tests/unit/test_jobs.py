"""The bookkeeping of a streaming job call, without sockets."""

from __future__ import annotations

import itertools

import pytest

from palm.call.jobs import JobStream
from palm.errors import PayloadTooLarge, RemoteError
from palm.wire.protocol import ErrorInfo, Header, Kind, decode, frames_for, jobs_in


def stream(items: list[bytes], **options: object) -> JobStream:
    defaults: dict[str, object] = {"ids": itertools.count(1), "max_message_bytes": 1 << 20}
    defaults.update(options)
    return JobStream(b"client", "srv.fn", items, **defaults)  # type: ignore[arg-type]


def answer(message: list[bytes], reverse: bool = False, fail: int | None = None) -> list[bytes]:
    header, frames = decode(message)
    reply = header.reply()
    results = [b"r" + p for p in jobs_in(header, frames)]
    if fail is not None:
        reply.errors = [ErrorInfo(fail, "ValueError", "bad")]
        results[fail] = b""
    return [reply.to_wire(), *frames_for(reply, results)]


def test_the_window_bounds_jobs_in_flight_and_batches_bound_messages() -> None:
    s = stream([b"%d" % i for i in range(100)], window=10, batch=4)
    sent = s.fill()
    assert [jobs(m) for m in sent] == [4, 4, 2]
    assert s.fill() == []
    s.accept(answer(sent[0]))
    assert sum(jobs(m) for m in s.fill()) == 4


def jobs(message: list[bytes]) -> int:
    header, payloads = decode(message)
    return len(jobs_in(header, payloads))


def test_small_payloads_travel_packed_and_large_ones_in_frames_of_their_own() -> None:
    small = stream([b"x"] * 3, batch=3).fill()[0]
    assert len(small) == 2 and decode(small)[0].packed == 3
    large = stream([b"x" * 20_000] * 3, batch=3).fill()[0]
    assert len(large) == 4 and decode(large)[0].packed == 0


def test_items_are_taken_lazily_and_messages_caps_them() -> None:
    taken: list[int] = []

    def gen():  # type: ignore[no-untyped-def]
        for i in itertools.count():
            taken.append(i)
            yield b"x"

    s = stream(gen(), window=5, batch=5, messages=7)  # type: ignore[arg-type]
    (first,) = s.fill()
    assert len(taken) == 5
    assert s.fill() == []  # the window is full: nothing more is taken
    assert len(taken) == 5
    s.accept(answer(first))
    (second,) = s.fill()
    assert jobs(second) == 2
    assert s.sent == 7 and s.exhausted
    assert len(taken) <= 8


def test_duplicates_are_dropped() -> None:
    s = stream([b"a", b"b"], batch=2)
    (message,) = s.fill()
    assert s.accept(answer(message)) == [b"ra", b"rb"]
    assert s.accept(answer(message)) == []
    assert s.done


def test_ordered_delivery_waits_for_earlier_results() -> None:
    s = stream([b"a", b"b", b"c"], batch=1, ordered=True)
    first, second, third = s.fill()
    assert s.accept(answer(third)) == []
    assert s.accept(answer(second)) == []
    assert s.accept(answer(first)) == [b"ra", b"rb", b"rc"]


def test_an_error_arrives_in_place_of_its_result() -> None:
    s = stream([b"a", b"b", b"c"], batch=3)
    (message,) = s.fill()
    out = s.accept(answer(message, fail=1))
    assert out[0] == b"ra" and out[2] == b"rc"
    assert isinstance(out[1], RemoteError)
    assert out[1].remote_type == "ValueError"


def test_resend_covers_exactly_the_outstanding_jobs() -> None:
    s = stream([b"a", b"b", b"c"], batch=3)
    (message,) = s.fill()
    header, _ = decode(message)
    partial = [Header(Kind.RESULT, header.id + 1, b"client", "srv.fn").to_wire(), b"rb"]
    assert s.accept(partial) == [b"rb"]
    again = s.resend()
    assert sorted(jobs_in(*decode(m))[0] for m in again) == [b"a", b"c"]


def test_a_payload_over_the_limit_is_refused_before_sending() -> None:
    s = stream([b"x" * 100], max_message_bytes=50)
    with pytest.raises(PayloadTooLarge):
        s.fill()


def test_non_bytes_items_are_a_type_error() -> None:
    s = stream(["text"])  # type: ignore[list-item]
    with pytest.raises(TypeError, match="bytes"):
        s.fill()


def test_the_bytes_in_flight_are_bounded_as_well_as_the_jobs() -> None:
    s = stream([b"x" * 1000] * 50, window=1000, batch=4, window_bytes=10_000)
    sent = s.fill()
    # messages go out while fewer than window_bytes are in flight: 10 jobs, in 3 messages
    assert sum(jobs(m) for m in sent) == 10
    assert s.fill() == []
    s.accept(answer(sent[0]))
    assert sum(jobs(m) for m in s.fill()) == 4


def test_a_batch_answered_whole_is_retired_and_one_answered_in_part_waits_for_the_rest() -> None:
    s = stream([b"a", b"b", b"c", b"d"], batch=2)
    first, second = s.fill()
    assert s.in_flight == 4
    assert s.accept(answer(first)) == [b"ra", b"rb"]
    assert s.in_flight == 2 and sorted(s.outstanding.values()) == [b"c", b"d"]
    header, _ = decode(second)
    partial = [Header(Kind.RESULT, header.id + 1, b"client", "srv.fn").to_wire(), b"rd"]
    assert s.accept(partial) == [b"rd"]
    assert s.accept(answer(second)) == [b"rc"]  # the whole batch again: only c is new
    assert s.done


def test_ordered_delivery_raises_an_error_parked_behind_a_clean_batch() -> None:
    s = stream([b"a", b"b", b"c"], batch=1, ordered=True)
    first, second, third = s.fill()
    assert s.accept(answer(second, fail=0)) == []
    out = s.accept(answer(first))
    assert out[0] == b"ra" and isinstance(out[1], RemoteError)
    assert not s.clean  # the driver must look at each outcome
    assert s.accept(answer(third)) == [b"rc"] and s.clean


def test_a_check_that_returns_bytes_sends_them_in_place_of_the_job_at_once() -> None:
    def check(sent: bytes, result: bytes) -> bool | bytes:
        return sent + b"+fn" if sent == b"a" else True

    s = stream([b"a"], batch=1, check=check)
    (message,) = s.fill()
    assert s.accept(answer(message)) == []  # "ra" asks for another payload: no result
    assert s.rejected == 0 and not s.done
    (again,) = s.retries(0.0)  # at once
    header, frames = decode(again)
    assert jobs_in(header, frames) == [b"a+fn"]
    assert s.accept(answer(again)) == [b"ra+fn"]
    assert s.done


class Clock:
    """A monotonic clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def run_stream(s: JobStream, clock: Clock, seconds_per_job: float, rounds: int) -> list[int]:
    """Answer every message at once for ``rounds`` fills, the clock moving
    ``seconds_per_job`` per job answered; the sizes of the messages sent."""
    sizes: list[int] = []
    for _ in range(rounds):
        sent = s.fill()
        for message in sent:
            sizes.append(jobs(message))
            clock.now += seconds_per_job * jobs(message)
            s.accept(answer(message))
    return sizes


def test_batches_of_fast_jobs_grow_to_max_batch_and_slow_ones_keep_theirs(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    clock = Clock()
    monkeypatch.setattr("palm.call.jobs.time.monotonic", clock)
    items = [b"x"] * 20_000
    grown = stream(items, window=2_000, batch=64, max_batch=256)
    fast = run_stream(grown, clock, 2e-6, 12)
    assert fast[0] == 64 and max(fast) == 256
    # the window grew with the batches: as many messages in flight as at the start
    assert grown.window == 8_000
    kept = stream(items, window=2_000, batch=64, max_batch=256)
    slow = run_stream(kept, clock, 1e-3, 12)
    assert max(slow) == 64  # (a message may be smaller: what the window had room for)
    assert kept.window == 2_000
    # a window of less than two batches is the caller's cap on jobs in flight: kept
    narrow = stream(items, window=100, batch=64, max_batch=256)
    run_stream(narrow, clock, 2e-6, 12)
    assert narrow.window == 100
    fixed = run_stream(stream(items, window=2_000, batch=64), clock, 2e-6, 12)
    assert max(fixed) == 64
    # whatever the growth, results come back whole and in order
    s = stream([b"%d" % i for i in range(5_000)], window=2_000, batch=8, max_batch=64,
               ordered=True)  # fmt: skip
    out: list[bytes] = []
    while not s.done:
        for message in s.fill():
            clock.now += 1e-6
            out += [o for o in s.accept(answer(message)) if isinstance(o, bytes)]
    assert out == [b"r%d" % i for i in range(5_000)]


def test_large_payloads_go_one_per_message_and_the_window_bounds_their_bytes() -> None:
    from palm.call.jobs import BATCH_BYTES

    mib = 1 << 20
    payloads = [bytes([i]) * mib for i in range(100)]
    s = stream(payloads, window=2_000, batch=64, window_bytes=8 * mib, max_message_bytes=64 * mib)
    sent = s.fill()
    # each 1 MiB payload closes its batch: a message (and a frame) of its own
    assert [jobs(m) for m in sent] == [1] * 8 and all(len(m) == 2 for m in sent)
    assert [m[1] for m in sent] == payloads[:8]  # the caller's bytes, as they are
    assert s.fill() == []  # the window is full: 8 MiB in flight
    s.accept(answer(sent[0]))
    assert [jobs(m) for m in s.fill()] == [1]
    # smaller payloads still share a message, up to BATCH_BYTES of them
    quarter = stream([b"q" * (mib // 4)] * 8, batch=64, max_message_bytes=64 * mib).fill()
    assert [jobs(m) for m in quarter] == [BATCH_BYTES // (mib // 4)] * (8 * mib // 4 // BATCH_BYTES)


def test_payloads_put_back_after_a_large_one_keep_their_order_and_their_limit() -> None:
    mib = 1 << 20
    large, small = [b"L%d" % i + b"x" * mib for i in range(3)], [b"s%d" % i for i in range(4)]
    items = [large[0], large[1], small[0], small[1], large[2], small[2], small[3]]
    sent = stream(items, batch=8, max_message_bytes=64 * mib).fill()
    assert [jobs(m) for m in sent] == [1, 1, 3, 2]
    header_payloads = [jobs_in(*decode(m)) for m in sent]
    assert [p for payloads in header_payloads for p in payloads] == items
    # a payload over the limit is refused even when it waits behind a large one
    too_big = stream([b"x" * mib, b"x" * (3 * mib)], batch=8, max_message_bytes=2 * mib)
    with pytest.raises(PayloadTooLarge):
        too_big.fill()


def test_batches_grow_soon_after_a_slow_start(monkeypatch: pytest.MonkeyPatch) -> None:
    clock = Clock()
    monkeypatch.setattr("palm.call.jobs.time.monotonic", clock)
    s = stream([b"x"] * 20_000, window=2_000, batch=64, max_batch=256)
    first = s.fill()
    clock.now += 0.05  # processes still starting, a busy machine: the first answers are late
    for message in first:
        s.accept(answer(message))
    # the late start is not held against the fast jobs that follow it
    assert max(run_stream(s, clock, 2e-6, 3)) == 256


def test_results_in_a_burst_are_paced_with_the_wait_before_them(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    clock = Clock()
    monkeypatch.setattr("palm.call.jobs.time.monotonic", clock)
    s = stream([b"x"] * 40_000, window=2_000, batch=64, max_batch=256)
    sizes: list[int] = []
    pending = s.fill()
    for _ in range(8):
        sizes += [jobs(message) for message in pending]
        clock.now += 0.064  # many workers, each 64 ms per batch, all answering together
        half = len(pending) // 2
        for message in pending[:half]:
            s.accept(answer(message))
        more = s.fill()  # the burst is read in two goes, a moment apart
        clock.now += 1e-4
        for message in pending[half:]:
            s.accept(answer(message))
        pending = more + s.fill()
    assert max(sizes) == 64 and len(sizes) > 100


def test_job_ids_reserve_runs_in_one_step_and_never_twice() -> None:
    from concurrent.futures import ThreadPoolExecutor

    from palm.call.jobs import JobIds, reserve_ids

    ids = JobIds(5)
    assert next(ids) == 5
    assert reserve_ids(ids, 256) == 6
    assert next(ids) == 262  # the run 6..261 is taken
    assert reserve_ids(itertools.count(1), 3) == 1  # any iterator still works

    shared = JobIds(1)

    def runs(_: int) -> list[int]:
        out = []
        for _ in range(2_000):
            first = shared.take(3)
            out += [first, first + 1, first + 2]
        return out

    with ThreadPoolExecutor(4) as pool:
        taken = [i for run in pool.map(runs, range(4)) for i in run]
    assert sorted(taken) == list(range(1, 24_001))  # every id once, none skipped


def test_a_stream_numbers_its_batches_from_shared_ids() -> None:
    from palm.call.jobs import JobIds

    ids = JobIds(1)
    s = stream([b"%d" % i for i in range(10)], ids=ids, window=10, batch=4)
    firsts = [decode(m)[0].id for m in s.fill()]
    assert firsts == [1, 5, 9]
    assert next(ids) == 11
