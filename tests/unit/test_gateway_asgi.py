"""The ASGI gateway's job route in-process (a double for the palm client): what it
answers, what it counts, and what its startup does to the garbage collector."""

from __future__ import annotations

import asyncio
import gc
import time
from collections.abc import Iterator
from typing import Any

import pytest

from palm.errors import RemoteError
from palm.gateway.asgi import EdgeApp, create_asgi_app
from palm.gateway.auth import Authenticator
from palm.gateway.job_route import RULE
from palm.state.apikeys import ApiKey

SERVICE = {
    "kind": "parallel",
    "push_address": "tcp://127.0.0.1:1",
    "pull_address": "tcp://127.0.0.1:2",
    "db_address": "tcp://127.0.0.1:3",
}


class Client:
    """Stands for the AsyncSharedClient: reverses the payload, or fails on 'fail'."""

    async def eval(self, function: str, payload: bytes, *, request_id: str | None = None) -> bytes:
        if function == "fail":
            raise RemoteError("ValueError", "cannot take it", function="demo.fail")
        return payload[::-1]


@pytest.fixture
def app() -> Iterator[EdgeApp]:
    edge = create_asgi_app({"services": {"demo": SERVICE}, "auth": "open"})
    edge.clients["demo"] = Client()  # type: ignore[assignment]
    yield edge
    edge.clients.clear()
    edge.close()


async def post(
    app: EdgeApp,
    path: str,
    body: bytes,
    authorization: bytes | None = None,
    request_id: bytes | None = b"r-1",
) -> list[dict[str, Any]]:
    headers = [(b"content-length", str(len(body)).encode())]
    if request_id is not None:
        headers.append((b"x-request-id", request_id))
    if authorization is not None:
        headers.append((b"authorization", authorization))
    scope = {"type": "http", "method": "POST", "path": path, "headers": headers}
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": body, "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    await app(scope, receive, send)
    return sent


def counted(app: EdgeApp, status: int) -> float:
    value: float = app.metrics.requests.labels(RULE, "POST", str(status))._value.get()
    return value


def test_answers_are_counted_when_the_loop_turn_ends(app: EdgeApp) -> None:
    async def run() -> tuple[float, float]:
        ok = await post(app, "/demo/echo", b"abc")
        failed = await post(app, "/demo/fail", b"abc")
        assert ok[0]["status"] == 200 and ok[1]["body"] == b"cba"
        assert (b"x-request-id", b"r-1") in ok[0]["headers"]
        assert failed[0]["status"] == 502
        before = counted(app, 200)
        await asyncio.sleep(0)  # the turn that answered them ends
        return before, counted(app, 200)

    before, after = asyncio.run(run())
    assert (before, after) == (0, 1)
    assert counted(app, 502) == 1
    jobs = app.metrics.jobs
    assert jobs.labels("demo", "ok")._value.get() == 1
    assert jobs.labels("demo", "RemoteError")._value.get() == 1


def test_a_request_without_an_id_gets_a_fresh_one(app: EdgeApp) -> None:
    async def run() -> list[list[dict[str, Any]]]:
        return [await post(app, "/demo/echo", b"abc", request_id=None) for _ in range(50)]

    answers = asyncio.run(run())
    ids = [dict(sent[0]["headers"])[b"x-request-id"] for sent in answers]
    job_ids = {dict(sent[0]["headers"])[b"x-palm-job-id"] for sent in answers}
    assert len(set(ids)) == 50 and not set(ids) & job_ids
    assert all(len(rid) == 32 and int(rid, 16) >= 0 for rid in ids)


def test_startup_freezes_what_is_alive(app: EdgeApp) -> None:
    messages = iter([{"type": "lifespan.startup"}])
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        try:
            return next(messages)
        except StopIteration:
            await asyncio.Event().wait()  # the server stops the task
            raise

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    async def run() -> None:
        task = asyncio.create_task(app({"type": "lifespan"}, receive, send))
        while not sent:
            await asyncio.sleep(0)
        task.cancel()

    gc.unfreeze()
    try:
        asyncio.run(run())
        assert sent == [{"type": "lifespan.startup.complete"}]
        assert gc.get_freeze_count() > 0
    finally:
        gc.unfreeze()


class SlowStore:
    """The deployment's keys, answering after a while (Redis under load)."""

    def __init__(self) -> None:
        self.lookups = 0

    def lookup(self, token: str) -> ApiKey | None:
        self.lookups += 1
        time.sleep(0.05)
        return ApiKey("k1", "palm up", created=0.0) if token == "good" else None

    def hit(self, key_id: str, rate: float) -> bool:
        return True


def test_requests_with_a_key_being_looked_up_wait_for_that_lookup(app: EdgeApp) -> None:
    store = SlowStore()
    store_arg: Any = store
    app.auth = Authenticator("api_keys", store_arg)

    async def run() -> list[int]:
        requests = [post(app, "/demo/echo", b"x", b"Bearer good") for _ in range(8)]
        requests += [post(app, "/demo/echo", b"x", b"Bearer bad") for _ in range(2)]
        answers = await asyncio.gather(*requests)
        return [sent[0]["status"] for sent in answers]

    assert asyncio.run(run()) == [200] * 8 + [401] * 2
    assert store.lookups == 1 + 2  # unknown keys are not cached: each asks
