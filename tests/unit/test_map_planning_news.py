"""What ``map`` plans from: the worker count the master tells (kept current between
HELLOs), and the time per item a previous map of the same function over items of the
same shape measured."""

from __future__ import annotations

from typing import Any

import pytest

from palm.call import parallel
from palm.serve.worker import FunctionWorker
from palm.testing import LocalMaster, wait_until


def square(x: int) -> int:
    return x * x


def test_a_client_welcomed_before_a_worker_joined_learns_of_it_with_its_next_results() -> None:
    with LocalMaster() as local:
        local.add_worker(FunctionWorker)
        # no HELLO for an hour: only the master's news can tell this client
        client = local.client(heartbeat_interval_s=3600.0)
        assert client.map(square, [1, 2, 3]) == [1, 4, 9]
        assert client.workers == 1
        local.add_worker(FunctionWorker)
        wait_until(lambda: len(local.master.pool.workers) == 2, 10, what="the second worker")
        assert client.map(square, [4, 5]) == [16, 25]
        assert client.workers == 2
        # and it is told once, not with every result
        assert local.master._told[client.client_id] == 2


def test_a_worker_gone_is_news_too() -> None:
    with LocalMaster() as local:
        local.add_worker(FunctionWorker)
        second = local.add_worker(FunctionWorker)
        wait_until(lambda: len(local.master.pool.workers) == 2, 10, what="two workers")
        client = local.client(heartbeat_interval_s=3600.0)
        assert client.map(square, [1, 2]) == [1, 4]
        assert client.workers == 2
        second.stop()
        wait_until(lambda: len(local.master.pool.workers) == 1, 10, what="the worker gone")
        assert client.map(square, [3]) == [9]
        assert client.workers == 1


@pytest.mark.parametrize(
    ("items", "shape"),
    [
        ([100, 5], (int, 7)),
        ([1000], (int, 10)),
        ((-1000,), (int, 10)),
        (range(3, 9), (int, 2)),
        (["abc", "x"], (str, 2)),
        ([b"x" * 1000], (bytes, 10)),
        ([[1, 2, 3, 4]], (list, 3)),
        ([1.5], float),
        ([], None),
        (iter([1, 2]), None),
    ],
)
def test_the_shape_of_a_maps_first_item(items: Any, shape: object) -> None:
    assert parallel._shape(items) == shape


class _BadLength:
    def __len__(self) -> int:
        raise RuntimeError("no length today")


def test_an_item_whose_length_fails_has_its_type_for_a_shape() -> None:
    assert parallel._shape([_BadLength()]) is _BadLength


def test_a_hint_is_kept_per_function_and_item_shape(monkeypatch: pytest.MonkeyPatch) -> None:
    hints: list[float | None] = []
    planners: list[Any] = []
    planner = parallel.mapping.ChunkPlanner

    def recording(*args: Any, **options: Any) -> Any:
        hints.append(options.get("item_s"))
        planners.append(planner(*args, **options))
        return planners[-1]

    monkeypatch.setattr(parallel.mapping, "ChunkPlanner", recording)
    with LocalMaster() as local:
        local.add_worker(FunctionWorker)
        client = local.client()
        client.map(square, [10**300] * 50)  # big ints: dear items
        client.map(square, [3] * 50)  # small ints: another shape, no hint from the first
        client.map(square, [10**300] * 50)  # the first shape again: its own hint
        client.map(square, [2] * 50)  # 2 and 3: both two bits long
    assert hints[0] is None and hints[1] is None
    # each map was hinted by what the last map over its own shape measured
    assert hints[2] == planners[0].item_s is not None
    assert hints[3] == planners[1].item_s is not None
