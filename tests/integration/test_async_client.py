"""AsyncSharedClient: many coroutines, one set of sockets, real master and worker processes."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from palm import RemoteError, TimeoutError
from palm.call.aio import AsyncSharedClient
from tests.fixtures.procs import Processes, wait_for
from tests.integration.test_parallel import FAST, WORKER, master_info, start_cluster


def async_of(info: dict[str, Any], **options: Any) -> AsyncSharedClient:
    return AsyncSharedClient(info["push"], info["pull"], info["db"], info["name"], **options)


@pytest.mark.timeout(120)
def test_each_coroutine_gets_its_own_results_and_calls_travel_together(procs: Processes) -> None:
    info = start_cluster(procs, 2)
    client = async_of(info)

    async def caller(t: int) -> list[tuple[bytes, bytes]]:
        wrong = []
        for i in range(200):
            payload = b"%d:%d" % (t, i)
            result = await client.eval("tag", payload)
            if result != b"ok:" + payload:
                wrong.append((payload, result))
        return wrong

    async def main() -> list[list[tuple[bytes, bytes]]]:
        try:
            return await asyncio.gather(*(caller(t) for t in range(32)))
        finally:
            client.close()

    assert asyncio.run(main()) == [[]] * 32
    assert client.jobs_sent == 32 * 200
    # calls made in one turn of the loop shared messages
    assert client.messages_sent < client.jobs_sent / 2


@pytest.mark.timeout(60)
def test_request_ids_and_errors_stay_with_their_own_calls(procs: Processes) -> None:
    info = start_cluster(procs, 1)
    client = async_of(info)

    async def caller(t: int) -> list[str]:
        errors = []
        for i in range(50):
            if t == 0 and i % 10 == 0:
                with pytest.raises(RemoteError) as err:
                    await client.eval("boom", b"%d" % i)
                errors.append(str(err.value))
            else:
                request_id = f"req-{t}-{i}"
                result = await client.eval("request_id", b"x", request_id=request_id)
                assert result == request_id.encode() + b"|x"
        return errors

    async def main() -> list[list[str]]:
        try:
            return await asyncio.gather(*(caller(t) for t in range(8)))
        finally:
            client.close()

    errors = asyncio.run(main())
    assert len(errors[0]) == 5 and all("worker boom" in e for e in errors[0])
    assert errors[1:] == [[]] * 7
    assert client.messages_sent < client.jobs_sent


@pytest.mark.timeout(60)
def test_calls_time_out_or_are_cancelled_and_late_answers_are_dropped(procs: Processes) -> None:
    info = start_cluster(procs, 0)
    client = async_of(info, heartbeat_interval_s=0.2)

    async def main() -> None:
        try:
            stuck = [client.eval("echo", b"late %d" % t, timeout_s=1.0) for t in range(4)]
            outcomes = await asyncio.gather(*stuck, return_exceptions=True)
            assert all(isinstance(o, TimeoutError) for o in outcomes), outcomes
            cancelled = asyncio.ensure_future(client.eval("echo", b"cancelled"))
            await asyncio.sleep(0.2)
            cancelled.cancel()
            with pytest.raises(asyncio.CancelledError):
                await cancelled
            assert client.outstanding == 0
            await asyncio.to_thread(procs.worker, WORKER, "w", info, *FAST)
            now = [client.eval("echo", b"now %d" % t, timeout_s=30) for t in range(4)]
            assert await asyncio.gather(*now) == [b"now %d" % t for t in range(4)]
            # the five late answers came back too, to nobody
            await asyncio.sleep(0.5)
            assert client.outstanding == 0
        finally:
            client.close()

    asyncio.run(main())


@pytest.mark.timeout(120)
def test_jobs_held_by_a_killed_master_are_sent_again_to_the_new_one(procs: Processes) -> None:
    master, info = procs.master("master", *FAST)
    client = async_of(info, heartbeat_interval_s=0.2)

    async def main() -> list[bytes]:
        try:
            calls = [
                asyncio.ensure_future(client.eval("echo", b"held %d" % t, timeout_s=60))
                for t in range(5)
            ]
            # no workers yet: the master holds all five jobs when it dies
            await asyncio.to_thread(wait_for, lambda: master_info(info)["stats"]["jobs_in"] == 5)
            master.kill()
            master.wait()
            await asyncio.to_thread(procs.master_again, info, *FAST)
            await asyncio.to_thread(procs.worker, WORKER, "w", info, *FAST)
            return list(await asyncio.gather(*calls))
        finally:
            client.close()

    assert asyncio.run(main()) == [b"held %d" % t for t in range(5)]


def test_a_closed_client_fails_its_waiting_calls(procs: Processes) -> None:
    info = start_cluster(procs, 0)
    client = async_of(info)

    async def main() -> None:
        waiting = asyncio.ensure_future(client.eval("echo", b"never"))
        await asyncio.sleep(0.1)
        client.close()
        with pytest.raises(RuntimeError, match="closed"):
            await waiting
        with pytest.raises(RuntimeError, match="closed"):
            await client.eval("echo", b"after")

    asyncio.run(main())


@pytest.mark.timeout(120)
@pytest.mark.parametrize("batches_out", [1, 2])
def test_calls_made_while_batches_are_out_wait_for_answers_and_go_together(
    procs: Processes, batches_out: int
) -> None:
    info = start_cluster(procs, 0)  # no worker yet: the first calls stay out
    # only the answers release the held calls
    client = async_of(info, hold_s=60.0, batches_out=batches_out)

    async def main() -> list[bytes]:
        try:
            alone = []
            for i in range(batches_out):  # alone, a call goes at once
                alone.append(asyncio.ensure_future(client.eval("tag", b"first%d" % i)))
                await asyncio.sleep(0.05)
                assert client.messages_sent == i + 1
            later = []
            for i in range(10):  # each in a turn of its own
                later.append(asyncio.ensure_future(client.eval("tag", b"%d" % i)))
                await asyncio.sleep(0.01)
            assert client.messages_sent == batches_out  # held while the first are out
            procs.worker(WORKER, "w0", info, *FAST)
            return list(await asyncio.gather(*alone, *later))
        finally:
            client.close()

    results = asyncio.run(main())
    firsts = [b"ok:first%d" % i for i in range(batches_out)]
    assert results == [*firsts, *(b"ok:%d" % i for i in range(10))]
    # the held ten in one message
    assert (client.messages_sent, client.jobs_sent) == (batches_out + 1, batches_out + 10)


@pytest.mark.timeout(60)
def test_held_calls_go_after_hold_s_when_no_answer_comes(procs: Processes) -> None:
    info = start_cluster(procs, 0)
    client = async_of(info, hold_s=0.05, timeout_s=30.0)

    async def main() -> None:
        try:
            first = asyncio.ensure_future(client.eval("tag", b"first"))
            await asyncio.sleep(0.01)
            second = asyncio.ensure_future(client.eval("tag", b"second"))
            deadline = asyncio.get_running_loop().time() + 20.0
            while client.messages_sent < 2:  # sent by the timer, no answer came
                assert asyncio.get_running_loop().time() < deadline
                await asyncio.sleep(0.01)
            procs.worker(WORKER, "w0", info, *FAST)
            assert await asyncio.gather(first, second) == [b"ok:first", b"ok:second"]
        finally:
            client.close()

    asyncio.run(main())
    assert (client.messages_sent, client.jobs_sent) == (2, 2)
