"""Shipping functions and chunks for map."""

from __future__ import annotations

import pickle
from typing import Any

import pytest

from palm.errors import ConfigError, ProtocolError, RemoteError
from palm.wire import shipping as mapping
from palm.wire.vetting import DependencyRetry


def square(x: int) -> int:
    return x * x


def test_a_signed_chunk_runs_and_reports_its_time() -> None:
    digest, fn = mapping.pickle_function(square)
    payload = mapping.encode_chunk(b"s", digest, fn, [1, 2, 3])
    answer = mapping.run_chunk(payload, b"s", {})
    results, seconds = mapping.decode_answer(answer, 0, "f", secret=b"s", chunk=payload)
    assert results == [1, 4, 9]
    assert seconds >= 0


def test_a_chunk_signed_with_another_secret_is_not_unpickled() -> None:
    digest, fn = mapping.pickle_function(square)
    payload = mapping.encode_chunk(b"other", digest, fn, [1])
    answer = mapping.run_chunk(payload, b"s", {})
    assert mapping.refusal(answer) is not None  # plain text, no pickle
    with pytest.raises(ProtocolError, match="signature"):
        mapping.decode_answer(answer, 0, "f", secret=b"other", chunk=payload)


def test_a_worker_without_secret_refuses_chunks() -> None:
    digest, fn = mapping.pickle_function(square)
    payload = mapping.encode_chunk(b"s", digest, fn, [1])
    answer = mapping.run_chunk(payload, None, {})
    with pytest.raises(ProtocolError, match="PALM_SECRET"):
        mapping.decode_answer(answer, 0, "f", secret=b"s", chunk=payload)


def test_an_exception_names_the_item_index() -> None:
    digest, fn = mapping.pickle_function(lambda x: 1 // x)
    payload = mapping.encode_chunk(b"s", digest, fn, [1, 1, 0, 1])
    answer = mapping.run_chunk(payload, b"s", {})
    with pytest.raises(RemoteError) as info:
        mapping.decode_answer(answer, 100, "f", secret=b"s", chunk=payload)
    assert info.value.index == 102
    assert info.value.remote_type == "ZeroDivisionError"


def test_source_text_is_not_accepted_as_a_function() -> None:
    with pytest.raises(ConfigError):
        mapping.pickle_function("lambda x: x")  # type: ignore[arg-type]


def test_chunks_follow_the_measured_time_per_item() -> None:
    planner = mapping.ChunkPlanner(1_000_000, 2, target_s=0.02)
    chunks = planner.chunks(range(1_000_000))
    first = next(chunks)
    assert len(first) == planner.first_wave_max  # nothing measured: a first wave
    planner.observe(len(first), len(first) * 1e-5)  # 10 us an item
    assert len(next(chunks)) == 2000  # 20 ms of work


def test_a_small_known_total_is_split_across_the_workers_at_once() -> None:
    planner = mapping.ChunkPlanner(1000, 2)
    assert [len(c) for c in planner.chunks(range(1000))] == [125] * 8


def test_a_very_small_total_goes_out_as_one_chunk_per_worker() -> None:
    planner = mapping.ChunkPlanner(100, 2)
    assert planner.first_wave == 2
    assert [len(c) for c in planner.chunks(range(100))] == [50, 50]


def test_an_unknown_total_starts_with_small_probes() -> None:
    planner = mapping.ChunkPlanner(None, 2)
    assert len(next(planner.chunks(iter(range(100))))) == planner.probe


def test_chunks_shrink_so_every_worker_gets_several() -> None:
    planner = mapping.ChunkPlanner(1000, 2, target_s=10.0)
    planner.observe(10, 0.01)  # 1 ms an item
    assert planner.next_size() == 1000 // (2 * 4)


def test_chunks_never_get_so_short_that_round_trips_dominate() -> None:
    planner = mapping.ChunkPlanner(1000, 2, min_chunk_s=0.002)
    planner.observe(100, 100e-6)  # 1 us an item: 125-item chunks would last 0.1 ms
    assert planner.next_size() == 1000  # 2 ms would be 2,000 items; only 1,000 remain


def test_a_fixed_chunksize_wins() -> None:
    planner = mapping.ChunkPlanner(None, 2, chunksize=7)
    assert [len(c) for c in planner.chunks(range(20))] == [7, 7, 6]


def test_results_that_cannot_be_pickled_are_an_error() -> None:
    digest, fn = mapping.pickle_function(lambda x: (y for y in range(x)))
    payload = mapping.encode_chunk(b"s", digest, fn, [1])
    answer = pickle.loads(mapping.run_chunk(payload, b"s", {})[32:])
    assert answer[0] == "err"


def test_a_watched_map_starts_with_single_items_and_keeps_chunks_short() -> None:
    planner = mapping.ChunkPlanner(100_000, 2, target_s=0.05, responsive=True)
    chunks = planner.chunks(range(100_000))
    # nothing measured: one item each (not a first wave of 12,500), the quickest first results
    assert [len(next(chunks)) for _ in range(6)] == [1] * 6
    planner.observe(1, 0.005)  # 5 ms an item
    assert len(next(chunks)) == 10  # 50 ms of work: a result every 50 ms per worker
    planner.observe(10, 20.0)  # items slower than a second: one at a time
    assert planner.next_size() == 1


def test_a_lean_chunk_runs_on_a_worker_that_holds_its_function() -> None:
    digest, fn = mapping.pickle_function(square)
    functions: dict[bytes, Any] = {}
    full = mapping.encode_chunk(b"s", digest, fn, [1, 2])
    mapping.run_chunk(full, b"s", functions)  # the worker keeps it by digest
    lean = mapping.encode_chunk(b"s", digest, b"", [3, 4])
    assert mapping.is_lean(lean) and not mapping.is_lean(full)
    assert len(lean) < len(full) - len(fn) + 10  # the function's bytes stay home
    answer = mapping.run_chunk(lean, b"s", functions)
    assert mapping.decode_answer(answer, 0, "f", secret=b"s", chunk=lean)[0] == [9, 16]


def test_a_worker_without_the_function_asks_for_it_and_the_full_chunk_answers() -> None:
    digest, fn = mapping.pickle_function(square)
    lean = mapping.encode_chunk(b"s", digest, b"", [5])
    report: list[tuple[str, bool]] = []
    asked = mapping.run_chunk(lean, b"s", {}, report=report)
    assert report == [("", True)]  # not counted as a failed chunk
    assert mapping.needed_digest(asked) == digest
    vet = DependencyRetry(b"s", 2, None, {digest: fn})
    full = vet.check(lean, asked)
    assert isinstance(full, bytes) and not mapping.is_lean(full)
    assert full[:32] == lean[:32]  # the same tag: the answer binds to the chunk the client keeps
    assert vet.shipped_again == 1
    answer = mapping.run_chunk(full, b"s", {})
    assert vet.check(lean, answer) is True
    assert mapping.decode_answer(answer, 0, "f", secret=b"s", chunk=lean)[0] == [25]


def test_a_need_for_a_function_the_client_does_not_know_is_no_replacement() -> None:
    digest, fn = mapping.pickle_function(square)
    lean = mapping.encode_chunk(b"s", digest, b"", [5])
    asked = mapping.run_chunk(lean, b"s", {})
    assert DependencyRetry(b"s", 2, None, {}).check(lean, asked) is True  # the answer it is
    with pytest.raises(ProtocolError, match="function"):
        mapping.decode_answer(asked, 0, "f", secret=b"s", chunk=lean)
    forged = b"\0" * 32 + asked[32:]  # a need nobody signed is no answer at all
    assert DependencyRetry(b"s", 2, None, {digest: fn}).check(lean, forged) is False


def test_a_full_chunk_made_with_other_function_bytes_is_refused() -> None:
    digest, _ = mapping.pickle_function(square)
    _, other = mapping.pickle_function(lambda x: -x)
    lean = mapping.encode_chunk(b"s", digest, b"", [5])
    swapped = mapping.with_function(lean, other)  # the tag still verifies; the digest does not
    assert mapping.refusal(mapping.run_chunk(swapped, b"s", {})) is not None


def test_sequences_are_cut_by_slicing_and_ranges_travel_as_ranges() -> None:
    planner = mapping.ChunkPlanner(10_000, 2, chunksize=5000)
    parts = list(planner.chunks(range(10_000)))
    assert parts == [range(0, 5000), range(5000, 10_000)]
    planner = mapping.ChunkPlanner(5, 2, chunksize=3)
    assert list(planner.chunks((1, 2, 3, 4, 5))) == [[1, 2, 3], [4, 5]]
    planner = mapping.ChunkPlanner(4, 2, chunksize=2)  # short ranges: lists pickle quicker
    assert list(planner.chunks(range(4))) == [[0, 1], [2, 3]]
    digest, fn = mapping.pickle_function(square)
    chunk = mapping.encode_chunk(b"s", digest, fn, parts[1])
    assert len(chunk) < len(fn) + 200  # not 5,000 pickled ints
    answer = mapping.run_chunk(chunk, b"s", {})
    results, _ = mapping.decode_answer(answer, 0, "f", secret=b"s", chunk=chunk)
    assert results == [x * x for x in range(5000, 10_000)]


def test_a_hinted_time_per_item_makes_a_large_cheap_total_one_chunk_per_worker() -> None:
    cheap = mapping.ChunkPlanner(100_000, 2, item_s=1e-7)  # 10 ms of work in all
    assert cheap.first_wave == 2
    dear = mapping.ChunkPlanner(100_000, 2, item_s=1e-5)  # 1 s of work: balanced chunks
    assert dear.first_wave == 8
    assert mapping.ChunkPlanner(100_000, 2).first_wave == 8  # nothing measured before


def test_small_work_is_counted_per_worker() -> None:
    # 1,000 items of 18 us: 9 ms per worker on two workers, one chunk each
    two = mapping.ChunkPlanner(1_000, 2, item_s=18e-6)
    assert two.first_wave == 2
    assert [len(c) for c in two.chunks(list(range(1_000)))] == [500, 500]
    # the same map on one worker is 18 ms of work: a first wave of four chunks
    assert mapping.ChunkPlanner(1_000, 1, item_s=18e-6).first_wave == 4
    # 30 ms per worker: balanced chunks, four per worker
    assert mapping.ChunkPlanner(2_000, 2, item_s=30e-6).first_wave == 8


def test_a_hint_never_leaves_a_worker_out_of_a_small_map() -> None:
    # a hint from cheap items, then items of the same function 100 times dearer:
    # every worker still gets a chunk
    stale = mapping.ChunkPlanner(100, 2, item_s=1e-7)
    assert stale.first_wave == 2
    assert [len(c) for c in stale.chunks(list(range(100)))] == [50, 50]
    tiny = mapping.ChunkPlanner(10_000, 2, item_s=1e-7, min_chunk_s=0.002)  # 1 ms of work
    assert [len(c) for c in tiny.chunks(range(10_000))] == [5_000, 5_000]


def test_a_chunk_of_another_type_is_refused_with_an_error() -> None:
    digest, fn = mapping.pickle_function(square)
    chunk = mapping.encode_chunk(b"s", digest, fn, {1: 2})  # type: ignore[arg-type]
    answer = mapping.run_chunk(chunk, b"s", {})
    with pytest.raises(RemoteError, match="not a list"):
        mapping.decode_answer(answer, 0, "f", secret=b"s", chunk=chunk)
