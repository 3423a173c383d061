"""Large payloads through a client's shared-memory arena: what a reference lets a
reader see, and the stream's books of the slots (no sockets)."""

from __future__ import annotations

import hashlib
import itertools
import os
import struct
import tempfile
import threading
import time
from pathlib import Path

import pytest

from palm.call.jobs import JobStream
from palm.errors import ProtocolError
from palm.wire import arena as shared
from palm.wire.arena import SHARED_FROM_BYTES, SHARED_KEY, UNREADABLE, Arena, read_shared, resolve
from palm.wire.protocol import ErrorInfo, decode, frames_for, jobs_in

pytestmark = pytest.mark.skipif(not shared.available(), reason="memfd_create is Linux-only")

BIG = SHARED_FROM_BYTES
LIMIT = 64 << 20


def distinct(index: int, size: int) -> bytes:
    seed = hashlib.sha256(b"%d" % index).digest()
    return (seed * (size // 32 + 1))[:size]


@pytest.fixture
def arena():  # type: ignore[no-untyped-def]
    made = Arena(limit_bytes=8 << 20)
    yield made
    made.close()


def test_a_reference_reads_back_exactly_its_payload(arena: Arena) -> None:
    payloads = [distinct(i, size) for i, size in enumerate([1, 100, BIG, BIG + 1, 3 << 20])]
    refs = [arena.put(p) for p in payloads]
    assert all(ref is not None for ref in refs)
    assert [read_shared(ref[0], LIMIT) for ref in refs if ref] == payloads
    assert arena.in_use == len(payloads) and arena.written == len(payloads)


def test_a_freed_slot_is_reused_and_its_old_reference_reads_nothing(arena: Arena) -> None:
    first = arena.put(distinct(1, BIG))
    assert first is not None
    arena.free(first[1])
    arena.free(first[1])  # twice: no harm
    assert arena.in_use == 0
    second = arena.put(distinct(2, BIG))
    assert second is not None
    assert second[1] is first[1]  # the same slot, the same pages
    with pytest.raises(ProtocolError, match="given up before it was read"):
        read_shared(first[0], LIMIT)
    assert read_shared(second[0], LIMIT) == distinct(2, BIG)


def test_a_slot_rewritten_while_it_is_read_is_never_taken_for_the_payload(arena: Arena) -> None:
    """A reader that saw the old stamp and then new bytes sees the new stamp: the
    payload is refused, not half old and half new."""
    size = 4 << 20
    put = arena.put(b"a" * size)
    assert put is not None
    ref, slot = put
    stop = threading.Event()

    def rewrite() -> None:
        while not stop.is_set():
            arena.free(slot)
            again = arena.put(b"b" * size)
            assert again is not None and again[1] is slot

    writer = threading.Thread(target=rewrite)
    writer.start()
    outcomes: set[str] = set()
    try:
        deadline = time.monotonic() + 2.0
        while time.monotonic() < deadline and len(outcomes) < 2:
            try:
                data = read_shared(ref, LIMIT)
            except ProtocolError as exc:
                outcomes.add("refused")
                assert "given up" in str(exc)
            else:
                outcomes.add("read")
                assert data == b"a" * size  # never a mix
    finally:
        stop.set()
        writer.join()
    assert "refused" in outcomes


def test_slots_fit_their_payloads_closely() -> None:
    for size in (1, BIG, BIG + 1, 1 << 20, (1 << 20) + 1, 3 << 20, 64 << 20):
        slot = shared.slot_size(size)
        assert size + 16 <= slot <= max(64 * 1024, 1.25 * (size + 16))
    assert shared.slot_size(1 << 20) == 1280 * 1024  # a 1 MiB payload: 1.25 MiB


def test_the_arena_refuses_past_its_limit_and_after_a_worker_could_not_read_it() -> None:
    small = Arena(limit_bytes=2 * shared.slot_size(BIG))  # two slots for BIG payloads
    try:
        assert small.put(b"x" * BIG) is not None
        assert small.put(b"x" * BIG) is not None
        assert small.put(b"x" * BIG) is None  # full: the caller sends it inline
        small.refused = True
        assert small.put(b"x") is None
    finally:
        small.close()
    assert small.put(b"x") is None  # closed


def forged(ref: bytes, **fields: object) -> bytes:
    names = ("pid", "fd", "offset", "length", "generation", "token")
    values = dict(zip(names, struct.unpack("<IIQQQ16s", ref), strict=True))
    values.update(fields)
    return struct.pack("<IIQQQ16s", *(values[name] for name in names))


def test_forged_references_read_nothing_else(arena: Arena, tmp_path: Path) -> None:
    put = arena.put(distinct(0, BIG))
    assert put is not None
    ref = put[0]
    with pytest.raises(ProtocolError, match="names no palm arena"):
        read_shared(forged(ref, token=os.urandom(16)), LIMIT)  # another client's token
    with open(tmp_path / "secret", "wb") as plain:  # any other file of ours
        plain.write(b"s" * 100)
        plain.flush()
        with pytest.raises(ProtocolError, match="names no palm arena"):
            read_shared(forged(ref, fd=plain.fileno()), LIMIT)
    with pytest.raises(ProtocolError, match="cannot open"):
        read_shared(forged(ref, pid=2**31), LIMIT)  # no such process
    with pytest.raises(ProtocolError, match="past the end"):
        read_shared(forged(ref, offset=1 << 40), LIMIT)
    with pytest.raises(ProtocolError, match="over the"):
        read_shared(forged(ref, length=LIMIT + 1), LIMIT)
    with pytest.raises(ProtocolError, match="given up"):
        read_shared(forged(ref, length=BIG - 1), LIMIT)  # the stamp says otherwise
    with pytest.raises(ProtocolError, match="is 48 bytes"):
        read_shared(ref[:-1], LIMIT)


def test_a_reference_to_a_pipe_neither_blocks_nor_reads(arena: Arena) -> None:
    """A FIFO is opened for reading only once a writer comes: the name check keeps a
    reference from ever getting that far."""
    put = arena.put(b"x" * BIG)
    assert put is not None
    with tempfile.TemporaryDirectory() as where:
        fifo = Path(where) / "fifo"
        os.mkfifo(fifo)
        handle = os.open(fifo, os.O_RDONLY | os.O_NONBLOCK)
        try:
            started = time.monotonic()
            with pytest.raises(ProtocolError, match="names no palm arena"):
                read_shared(forged(put[0], fd=handle), LIMIT)
            assert time.monotonic() - started < 1.0
        finally:
            os.close(handle)


def test_resolve_reads_marked_messages_and_takes_the_mark_out(arena: Arena) -> None:
    payloads = [distinct(i, BIG) for i in range(3)]
    refs = [put[0] for put in map(arena.put, payloads) if put]
    extra = {SHARED_KEY: 1, "request_id": "r"}
    assert resolve(extra, refs, LIMIT) == payloads
    assert extra == {"request_id": "r"}  # the next stage of a pipeline gets plain payloads
    assert resolve(extra, [b"plain"], LIMIT) == [b"plain"]
    assert resolve(None, [b"plain"], LIMIT) == [b"plain"]


# the stream's books -----------------------------------------------------------------


def stream(items: list[bytes], arena: Arena, **options: object) -> JobStream:
    defaults: dict[str, object] = {"ids": itertools.count(1), "max_message_bytes": LIMIT}
    defaults.update(options)
    return JobStream(b"client", "srv.fn", items, arena=arena, **defaults)  # type: ignore[arg-type]


def served(message: list[bytes], fail_with: str | None = None) -> list[bytes]:
    """A worker's answer: each payload (read from the arena) echoed, or ``fail_with``."""
    header, frames = decode(message)
    jobs = jobs_in(header, frames)
    reply = header.reply()
    if fail_with is not None:
        reply.errors = [ErrorInfo(i, fail_with, "cannot open") for i in range(len(jobs))]
        return [reply.to_wire(), *frames_for(reply, [b""] * len(jobs))]
    results = resolve(dict(header.extra or {}), jobs, LIMIT)
    return [reply.to_wire(), *frames_for(reply, results)]


def test_large_payloads_go_as_references_and_their_slots_free_as_they_are_answered(
    arena: Arena,
) -> None:
    items = [distinct(i, BIG) for i in range(4)] + [b"small"]
    s = stream(items, arena, batch=1)
    sent = s.fill()
    marked = [bool((decode(m)[0].extra or {}).get(SHARED_KEY)) for m in sent]
    assert marked == [True, True, True, True, False]
    assert max(len(m[-1]) for m in sent[:4]) == shared.REF_BYTES  # no payload on the wire
    assert arena.in_use == 4
    results = [r for m in sent for r in s.accept(served(m))]
    assert sorted(results) == sorted(items)
    assert arena.in_use == 0 and s.done


def test_a_worker_that_cannot_read_gets_the_payload_inline_and_the_arena_is_left(
    arena: Arena,
) -> None:
    items = [distinct(i, BIG) for i in range(2)]
    s = stream(items, arena, batch=1)
    first, second = s.fill()
    assert s.accept(served(first, fail_with=UNREADABLE)) == []  # not an outcome
    assert arena.refused and arena.in_use == 1
    (again,) = s.retries(time.monotonic())
    header, frames = decode(again)
    assert not (header.extra or {}).get(SHARED_KEY) and jobs_in(header, frames) == items[:1]
    assert s.accept(served(again)) == items[:1]
    assert s.accept(served(second)) == items[1:]  # sent before: still read from the arena
    assert arena.in_use == 0 and s.done


def test_another_error_is_the_job_s_outcome_and_frees_its_slot(arena: Arena) -> None:
    s = stream([distinct(0, BIG)], arena, batch=1)
    (message,) = s.fill()
    (outcome,) = s.accept(served(message, fail_with="ValueError"))
    assert isinstance(outcome, Exception) and not arena.refused
    assert arena.in_use == 0


def test_closing_a_call_frees_the_slots_of_jobs_never_answered(arena: Arena) -> None:
    s = stream([distinct(i, BIG) for i in range(3)], arena, batch=1)
    assert len(s.fill()) == 3 and arena.in_use == 3
    s.close()
    assert arena.in_use == 0


def test_a_full_arena_sends_inline(arena: Arena) -> None:
    s = stream([distinct(i, 3 << 20) for i in range(4)], arena, batch=1)  # 8 MiB arena
    sent = s.fill()
    marked = [bool((decode(m)[0].extra or {}).get(SHARED_KEY)) for m in sent]
    assert marked[0] and not all(marked)
    assert [r for m in sent for r in s.accept(served(m))] == [
        distinct(i, 3 << 20) for i in range(4)
    ]
    assert arena.in_use == 0
