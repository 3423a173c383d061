"""Every client sends jobs only to a master whose WELCOME it has.

A master that took a client's jobs and died before answering its first
HELLO would leave nothing behind to say so: the successor's WELCOME would be
the first the client saw, so no session change, and the jobs would be lost.
Here the address is first held by a silent stand-in (real sockets that read
and never answer), then by a real master; every kind of client must have
sent the stand-in nothing but HELLOs, and get its result from the real one.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import zmq

from palm import TimeoutError
from palm.call.aio import AsyncSharedClient
from palm.call.parallel import ParallelClient
from palm.call.shared import SharedClient
from palm.wire.messages import control
from palm.wire.protocol import Kind, decode, jobs_in
from tests.fixtures.procs import Processes
from tests.integration.test_parallel import FAST, WORKER

ANY = "tcp://127.0.0.1:*"


class SilentMaster:
    """A ROUTER and a PULL at a master's two client addresses that never answer."""

    def __init__(self) -> None:
        self.context = zmq.Context.instance()
        self.router = self.context.socket(zmq.ROUTER)
        self.pull = self.context.socket(zmq.PULL)
        for sock in (self.router, self.pull):
            sock.setsockopt(zmq.LINGER, 0)
            sock.bind(ANY)
        self.push_address = self.router.getsockopt_string(zmq.LAST_ENDPOINT)
        self.pull_address = self.pull.getsockopt_string(zmq.LAST_ENDPOINT)

    def listen(self, seconds: float, welcome: bool = False) -> tuple[list[int], list[bytes]]:
        """What came within ``seconds``: the kinds of the messages to the ROUTER, and
        the payloads of the jobs to the PULL. ``welcome``: answer each HELLO with a
        WELCOME, as a master does (and still nothing else)."""
        hellos: list[int] = []
        jobs: list[bytes] = []
        poller = zmq.Poller()
        poller.register(self.router, zmq.POLLIN)
        poller.register(self.pull, zmq.POLLIN)
        deadline = time.monotonic() + seconds
        while (left := deadline - time.monotonic()) > 0:
            for sock, _ in poller.poll(int(left * 1000) + 1):
                frames = sock.recv_multipart()
                if sock is self.pull:
                    jobs += jobs_in(*decode(frames))
                    continue
                header = decode(frames[1:])[0]
                hellos.append(header.kind)
                if welcome and header.kind == Kind.HELLO:
                    answer = control(Kind.WELCOME, frames[0], header.id, session="stand-in")
                    self.router.send_multipart([frames[0], *answer])
        return hellos, jobs

    def client_of(self, kind: type[Any], timeout_s: float) -> Any:
        """A client of ``kind`` for the master at these addresses."""
        return kind(
            self.push_address,
            self.pull_address,
            None,
            "master",
            heartbeat_interval_s=0.2,
            timeout_s=timeout_s,
        )

    def die(self) -> None:
        self.router.close(0)
        self.pull.close(0)


def _parallel_eval(client: Any) -> bytes:
    return bytes(client.eval("echo", b"first"))


def _parallel_job(client: Any) -> bytes:
    (result,) = list(client.job("echo", [b"first"]))
    return bytes(result)


def _shared_eval(client: Any) -> bytes:
    return bytes(client.eval("echo", b"first"))


def _async_eval(client: Any) -> bytes:
    async def main() -> bytes:
        try:
            return bytes(await client.eval("echo", b"first"))
        finally:
            client.close()

    return asyncio.run(main())


CLIENTS: dict[str, tuple[type[Any], Callable[[Any], bytes]]] = {
    "ParallelClient.eval": (ParallelClient, _parallel_eval),
    "ParallelClient.job": (ParallelClient, _parallel_job),
    "SharedClient.eval": (SharedClient, _shared_eval),
    "AsyncSharedClient.eval": (AsyncSharedClient, _async_eval),
}


@pytest.fixture
def silent() -> Iterator[SilentMaster]:
    stand_in = SilentMaster()
    yield stand_in
    stand_in.die()


@pytest.mark.timeout(90)
@pytest.mark.parametrize("kind", list(CLIENTS))
def test_no_job_goes_to_a_master_before_its_welcome(
    procs: Processes, silent: SilentMaster, kind: str
) -> None:
    call = CLIENTS[kind][1]
    client = silent.client_of(CLIENTS[kind][0], timeout_s=60)
    outcome: list[bytes | BaseException] = []

    def run() -> None:
        try:
            outcome.append(call(client))
        except BaseException as exc:
            outcome.append(exc)

    caller = threading.Thread(target=run)
    caller.start()
    try:
        hellos, jobs = silent.listen(1.0)
        assert hellos and set(hellos) == {Kind.HELLO}
        assert jobs == []  # without a WELCOME, nothing but HELLO
        silent.die()
        info = {"name": "master", "push": silent.push_address, "pull": silent.pull_address}
        _, ready = procs.master_again(dict(info, worker_pull=ANY, worker_push=ANY, db=ANY), *FAST)
        procs.worker(WORKER, "w", ready, *FAST)
        caller.join(60)
        assert outcome == [b"first"]
    finally:
        caller.join(60)
        if kind != "AsyncSharedClient.eval":
            client.close()


@pytest.mark.timeout(60)
@pytest.mark.parametrize("kind", list(CLIENTS))
def test_a_master_that_never_answers_hello_is_named_in_the_timeout(
    silent: SilentMaster, kind: str
) -> None:
    call = CLIENTS[kind][1]
    client = silent.client_of(CLIENTS[kind][0], timeout_s=0.6)
    try:
        with pytest.raises(TimeoutError, match=r"did not answer HELLO .* were not sent"):
            call(client)
    finally:
        if kind != "AsyncSharedClient.eval":
            client.close()
    _, jobs = silent.listen(0.2)
    assert jobs == []


async def _two_async_calls(client: AsyncSharedClient) -> list[str]:
    """One call that gives up, then one more; the errors' texts."""
    errors = []
    try:
        for payload, timeout_s in ((b"gave up", 0.6), (b"second", 1.5)):
            try:
                await client.eval("echo", payload, timeout_s=timeout_s)
            except TimeoutError as exc:
                errors.append(str(exc))
    finally:
        client.close()
    return errors


def _two_shared_calls(client: SharedClient) -> list[str]:
    errors = []
    try:
        for payload, timeout_s in ((b"gave up", 0.6), (b"second", 1.5)):
            try:
                client.eval("echo", payload, timeout_s=timeout_s)
            except TimeoutError as exc:
                errors.append(str(exc))
    finally:
        client.close()
    return errors


@pytest.mark.timeout(60)
@pytest.mark.parametrize("kind", ["SharedClient.eval", "AsyncSharedClient.eval"])
def test_a_call_that_gave_up_before_the_first_welcome_is_never_sent(
    silent: SilentMaster, kind: str
) -> None:
    """The first call times out unwelcomed; the stand-in then welcomes the client
    (and answers nothing else): only the second call's job may reach it."""
    client = silent.client_of(CLIENTS[kind][0], timeout_s=60)
    errors: list[str] = []

    def run() -> None:
        if isinstance(client, AsyncSharedClient):
            errors.extend(asyncio.run(_two_async_calls(client)))
        else:
            errors.extend(_two_shared_calls(client))

    caller = threading.Thread(target=run)
    caller.start()
    try:
        _, before = silent.listen(0.9)  # the first call gives up at 0.6 s
        hellos, jobs = silent.listen(2.0, welcome=True)
    finally:
        caller.join(30)
    assert before == []
    assert Kind.HELLO in hellos
    assert jobs == [b"second"]
    assert "did not answer HELLO" in errors[0]
    assert "1 job of master.echo outstanding" in errors[1]
