"""AsyncSharedClient's timeouts, one timer per batch and timeout (no master: nothing
is ever answered)."""

from __future__ import annotations

import asyncio

from palm.call.aio import AsyncSharedClient
from palm.errors import TimeoutError

NOWHERE = "tcp://127.0.0.1:9"  # nothing listens: the jobs are never answered


def test_each_call_times_out_after_its_own_timeout() -> None:
    async def run() -> tuple[list[object], int]:
        client = AsyncSharedClient(NOWHERE, NOWHERE, None, "master", timeout_s=0.2)
        try:
            calls = [client.eval("f", b"%d" % i) for i in range(3)]
            calls.append(client.eval("f", b"short", timeout_s=0.1))
            calls.append(client.eval("f", b"long", timeout_s=0.4))
            results = await asyncio.gather(*calls, return_exceptions=True)
            return results, client.outstanding
        finally:
            client.close()

    results, outstanding = asyncio.run(run())
    assert all(isinstance(result, TimeoutError) for result in results), results
    assert [str(r).split(" for ")[1].split(" s")[0] for r in results] == [
        "0.2", "0.2", "0.2", "0.1", "0.4"
    ]  # fmt: skip
    assert outstanding == 0


def test_a_cancelled_call_leaves_the_others_of_its_batch_waiting() -> None:
    async def run() -> tuple[bool, object]:
        client = AsyncSharedClient(NOWHERE, NOWHERE, None, "master", timeout_s=0.2)
        try:
            first = asyncio.ensure_future(client.eval("f", b"1"))
            second = asyncio.ensure_future(client.eval("f", b"2"))
            await asyncio.sleep(0.05)
            first.cancel()
            await asyncio.sleep(0)
            still_waiting = not second.done()
            try:
                await second
            except TimeoutError as exc:
                return still_waiting, exc
            return still_waiting, None
        finally:
            client.close()

    still_waiting, error = asyncio.run(run())
    assert still_waiting
    assert isinstance(error, TimeoutError)
