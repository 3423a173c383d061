"""A master counts map jobs under the user's function, with the chunks that failed:
what ``palm stats`` shows for a function service."""

from __future__ import annotations

import pytest

from palm.errors import RemoteError
from palm.serve.worker import FunctionWorker
from palm.testing import LocalMaster, wait_until
from palm.wire.control import ResultMeta, map_report
from palm.wire.protocol import Header, Kind


def halve(x: int) -> int:
    if x < 0:
        raise ValueError("no negative numbers")
    return x // 2


def test_map_jobs_count_under_the_function_and_failures_count() -> None:
    with LocalMaster() as local:
        local.add_worker(FunctionWorker)
        client = local.client()
        assert client.map(halve, [2, 4, 6], chunksize=1) == [1, 2, 3]
        with pytest.raises(RemoteError, match="no negative numbers"):
            client.map(halve, [8, -1], chunksize=1)

        def counted() -> dict[str, int] | None:
            functions = local.master.counters.snapshot()["functions"]
            counts = functions.get("halve")
            return counts if counts and counts["out"] + counts["failed"] >= 5 else None

        counts = wait_until(counted, 10, what="the map jobs counted")
        assert counts["failed"] == 1 and counts["out"] == 4
        assert "__map__" not in local.master.counters.snapshot()["functions"]


def test_a_workers_map_report_is_read_back_and_bad_ones_left_out() -> None:
    header = Header(Kind.RESULT, client=b"c", id=1, function="__map__")
    header.extra = map_report({"w": b"worker"}, "halve", 2)
    meta = ResultMeta.from_header(header)
    assert (meta.worker, meta.map_function, meta.map_failed) == (b"worker", "halve", 2)
    header.extra = {"mf": 7, "mx": "many"}
    meta = ResultMeta.from_header(header)
    assert (meta.map_function, meta.map_failed) == (None, 0)
    header.extra = {"mf": "x" * 1000}
    assert ResultMeta.from_header(header).map_function is None
