"""How ``map`` cuts its items into chunks: sizes from the measured time per item."""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Iterator
from typing import Any

from palm.errors import ConfigError

__all__ = ["ChunkPlanner"]

#: A chunk of a range this long or longer travels as a range (a pickled range
#: costs a few microseconds whatever its length: a list of a few items less).
_RANGE_FROM = 128


class ChunkPlanner:
    """Chunk sizes from measured per-item time.

    The first chunks are small probes; once workers report how long items
    take, chunks are sized to take about ``target_s`` each, but never so
    large that fewer than ``min_chunks_per_worker`` chunks per worker remain
    for the items still to come (when the total is known). A known total of
    at most ``small_total`` items goes out as one chunk per worker: for a
    small input every extra round trip costs more than it balances. So does a
    known total whose work, at ``item_s`` (a previous map's measured time per
    item of the same function), comes to at most ``small_s`` per worker: ten
    thousand no-op items are as small as a hundred, and a thousand items of
    10 µs each on two workers go as two chunks of 5 ms, not eight of 1.25 ms
    (each chunk costs a round trip through the master, a few hundred µs on a
    busy machine). A hint never cuts a map into fewer
    chunks than workers: it may be stale (the same function, heavier items).

    With ``responsive`` (someone watches the progress), the first chunks are
    single items rather than a first wave sized from the total, so the first
    results come back after about one item's time, and every later chunk is
    sized from the measured time: results keep arriving every ``target_s`` or
    so per worker (every item's time, for items slower than that).
    """

    def __init__(
        self,
        total: int | None,
        workers: int,
        *,
        chunksize: int | None = None,
        target_s: float = 0.05,
        min_chunks_per_worker: int = 4,
        probe: int = 8,
        max_chunk: int = 100_000,
        first_wave_max: int = 50_000,
        min_chunk_s: float = 0.002,
        responsive: bool = False,
        small_total: int = 256,
        item_s: float | None = None,
        small_s: float = 0.01,
    ) -> None:
        if chunksize is not None and chunksize < 1:
            raise ConfigError("chunksize must be at least 1")
        self.total = total
        self.workers = max(1, workers)
        self.fixed = chunksize
        self.target_s = target_s
        self.min_chunks_per_worker = min_chunks_per_worker
        self.probe = probe
        self.max_chunk = max_chunk
        self.first_wave_max = first_wave_max
        self.min_chunk_s = min_chunk_s
        self.responsive = responsive
        self.small_total = small_total
        #: the time per item a previous map measured (a hint; not used to size chunks)
        self.hint_s = item_s
        self.small_s = small_s
        self.item_s: float | None = None
        self.sent = 0

    @property
    def first_wave(self) -> int:
        """How many chunks the first wave of a known total has (before any is measured).

        A small total goes as one chunk per worker, however small the hinted
        time per item: the hint is a previous map's, and the same function
        given heavier items would otherwise run on one worker alone.
        """
        if not self.small:
            return self.workers * self.min_chunks_per_worker
        return self.workers

    @property
    def small(self) -> bool:
        """Whether the known total is small: in items, or in work per worker at the
        hinted time per item."""
        if self.total is None:
            return False
        if self.total <= self.small_total:
            return True
        return self.hint_s is not None and self.total * self.hint_s <= self.small_s * self.workers

    def observe(self, items: int, seconds: float) -> None:
        if items <= 0:
            return
        per_item = max(seconds / items, 1e-8)
        self.item_s = per_item if self.item_s is None else 0.7 * self.item_s + 0.3 * per_item

    def next_size(self) -> int:
        if self.fixed is not None:
            return self.fixed
        if self.item_s is None:
            # nothing measured yet: with a known total, a first wave of a few
            # chunks per worker (like a pool's chunks); else a small probe.
            # Watched: one item each, the quickest first results.
            size = 1 if self.responsive else self.probe
            if self.total is not None and not self.responsive:
                size = max(self.probe, min(self.first_wave_max, -(-self.total // self.first_wave)))
        else:
            size = max(1, round(self.target_s / self.item_s))
        if self.total is not None:
            remaining = max(0, self.total - self.sent)
            if self.item_s is None:
                size = min(size, max(1, remaining))
            else:
                # a few chunks per worker for what is left, so they finish
                # together, but none so short that its round trip dominates
                cap = remaining // (self.workers * self.min_chunks_per_worker)
                floor = round(self.min_chunk_s / self.item_s)
                size = max(1, min(size, max(cap, floor), remaining))
        return min(size, self.max_chunk)

    def chunks(self, iterable: Iterable[Any]) -> Iterator[list[Any] | range]:
        """The items in chunks of :meth:`next_size` each.

        A list or tuple is cut by slicing (lists), a ``range`` into ranges (of
        128 items or more; shorter ones as lists): a range pickles in a few
        bytes whatever its length, and a worker maps over it as over the list
        it stands for. Anything else, and any input cut into a fixed size
        under 128, is read once, in order.
        """
        kind = type(iterable)
        small = self.fixed is not None and self.fixed < _RANGE_FROM  # as quick read in turn
        if (kind is list or kind is tuple or kind is range) and not small:
            yield from self._slices(iterable)  # type: ignore[arg-type]
            return
        it = iter(iterable)
        while True:
            chunk = list(itertools.islice(it, self.next_size()))  # in C, not per item here
            if not chunk:
                return
            self.sent += len(chunk)
            yield chunk

    def _slices(self, items: list[Any] | tuple[Any, ...] | range) -> Iterator[list[Any] | range]:
        start = 0
        while start < len(items):
            part = items[start : start + self.next_size()]
            start += len(part)
            self.sent += len(part)
            if isinstance(part, tuple) or (isinstance(part, range) and len(part) < _RANGE_FROM):
                yield list(part)
            else:
                yield part
