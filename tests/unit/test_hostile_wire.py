"""Hostile input at a master and its workers, in one process through palm.testing.

A malformed control message from a "worker" is counted and dropped (the
master serves on), a job message whose payloads no worker can read is
answered with ``palm.ProtocolError`` (the worker's credit comes back and the
job is retired), a job whose frames cannot even be counted is answered by
the master itself, and an exception nobody foresaw in a handler is caught by
the loop's last-resort guard.
"""

from __future__ import annotations

from collections.abc import Iterator

import msgpack
import pytest
import zmq

from palm import ProtocolError, RemoteError
from palm.serve.master import Master
from palm.serve.stream import Message
from palm.testing import LocalMaster, answers, wait_until
from palm.wire.protocol import Header, Kind
from palm.wire.sockets import make_socket
from tests.apps.kit import Echo

pytestmark = pytest.mark.timeout(60)


def _raw_worker(cluster: LocalMaster) -> zmq.Socket[bytes]:
    """A DEALER on the master's worker socket that the test fills by hand."""
    sock = make_socket(zmq.DEALER, identity=b"hostile-worker")
    sock.connect(cluster.endpoints.worker_push)
    cluster._on_close("raw worker", lambda: sock.close(0))
    return sock


@pytest.mark.parametrize(
    "kind, extra",
    [
        (Kind.READY, {"credit": "x", "functions": ["echo"]}),
        (Kind.READY, {"pid": "abc", "functions": ["echo"]}),
        (Kind.READY, {"credit": 10**12}),
        (Kind.READY, {"host": 5, "name": [1]}),
        (Kind.READY, {"functions": "echo"}),
        (Kind.CREDIT, {"credit": "x"}),
        (Kind.CREDIT, {"credit": -5}),
    ],
)
def test_a_malformed_worker_control_message_is_dropped_and_the_master_serves_on(
    kind: int, extra: dict[str, object]
) -> None:
    with LocalMaster() as cluster:
        raw = _raw_worker(cluster)
        if kind == Kind.CREDIT:  # credit from a registered worker
            raw.send_multipart([Header(Kind.READY, 0, extra={"credit": 0}).to_wire()])
            assert raw.poll(5000), "no WELCOME for a valid READY"
            raw.recv_multipart()
        raw.send_multipart([Header(kind, 0, extra=extra).to_wire()])
        wait_until(lambda: cluster.info()["malformed"] >= 1, timeout_s=5)
        # the bad READY registered nothing; bad credit granted nothing
        if kind == Kind.READY:
            assert "hostile-worker" not in {w["name"] for w in cluster.info()["workers"]}
        else:
            assert [w["credit"] for w in cluster.info()["workers"]] == [0]
        cluster.add_worker(Echo)
        assert cluster.client().eval("echo", b"next") == b"next"


def _unreadable_packed(cluster: LocalMaster, wire_client_id: bytes, job_id: int) -> list[bytes]:
    """A JOB announcing two packed jobs whose items are not bytes."""
    header = Header(Kind.JOB, job_id, wire_client_id, f"{cluster.name}.echo", packed=2)
    return [header.to_wire(), msgpack.packb([1, 2])]


def test_unreadable_packed_jobs_are_answered_and_do_not_stall_the_pool() -> None:
    with LocalMaster() as cluster:
        worker = cluster.add_worker(Echo, credit=2)
        wire = cluster.wire_client()
        for n in range(4):
            wire.send_frames(_unreadable_packed(cluster, wire.client_id, 1000 + 10 * n))
        outcomes = answers(wire.results(8))
        assert sorted(outcomes) == [i + 10 * n for n in range(4) for i in (1000, 1001)]
        for outcome in outcomes.values():
            # the client hears palm.ProtocolError for each job the header announced
            assert isinstance(outcome, ProtocolError) and isinstance(outcome, RemoteError)
            assert outcome.remote_type == "palm.ProtocolError"
        # later jobs still run: the worker has its credit back (and what it asked
        # for on top, running them fast) and nothing is in flight
        ids = wire.send("echo", [b"a", b"b", b"c"], packed=True)
        assert answers(wire.results(3)) == dict(zip(ids, [b"a", b"b", b"c"], strict=True))
        wait_until(
            lambda: cluster.workers()[worker.name]["credit"] == 2 + worker.extra_credit,
            timeout_s=5,
        )
        info = cluster.info()
        assert (info["queued"], info["inflight"]) == (0, 0)
        assert worker.malformed.total == 4


@pytest.mark.parametrize(
    "frames_after_header",
    [
        [b"x" * 10, b"y" * 10],  # packed into two frames
        [b"\x92\xc4\x00"],  # 5 jobs packed in 3 bytes
    ],
)
def test_a_job_whose_frames_cannot_be_counted_is_answered_not_queued(
    frames_after_header: list[bytes],
) -> None:
    with LocalMaster() as cluster:
        stub = cluster.stub_worker("echo", credit=5)
        wire = cluster.wire_client()
        packed = 2 if len(frames_after_header) == 2 else 5
        header = Header(Kind.JOB, 50, wire.client_id, f"{cluster.name}.echo", packed=packed)
        wire.send_frames([header.to_wire(), *frames_after_header])
        (result,) = wire.results(1)
        assert result.header.id == 50 and len(result.payloads) == 1
        (error,) = result.outcomes().values()
        assert isinstance(error, ProtocolError)
        assert stub.pending() == []
        info = cluster.info()
        assert (info["queued"], info["inflight"], info["malformed"]) == (0, 0, 1)


class Fragile(Master):
    """A master whose gather hook breaks on one payload."""

    def gather(self, message: Message) -> Iterator[Message]:
        if message.payload == b"boom":
            raise RuntimeError("a bug in a hook")
        yield message


def test_a_hook_that_raises_answers_that_job_with_an_error_and_the_master_serves_on() -> None:
    with LocalMaster(master_class=Fragile) as cluster:
        cluster.add_worker(Echo)
        wire = cluster.wire_client()
        (boom,) = wire.send("echo", [b"boom"])
        outcomes = answers(wire.results(1))
        assert list(outcomes) == [boom]
        outcome = outcomes[boom]
        assert isinstance(outcome, RemoteError)
        assert outcome.remote_type == "palm.BadResult"
        assert "gather failed: RuntimeError: a bug in a hook" in outcome.remote_message
        ids = wire.send("echo", [b"fine"])
        assert answers(wire.results(1)) == {ids[0]: b"fine"}
        assert cluster.master.failures.total == 0


class Buggy(Master):
    """A master with a bug of its own on one payload."""

    def _deliver(self, header: Header, frames: list[bytes]) -> None:
        if any(b"boom" in frame for frame in frames[1:]):
            raise RuntimeError("a bug in the master")
        super()._deliver(header, frames)


def test_an_unforeseen_error_in_a_handler_is_caught_and_the_master_serves_on(
    caplog: pytest.LogCaptureFixture,
) -> None:
    with LocalMaster(master_class=Buggy) as cluster:
        cluster.add_worker(Echo)
        wire = cluster.wire_client()
        wire.send("echo", [b"boom"])
        wait_until(lambda: cluster.master.failures.total == 1, timeout_s=5)
        ids = wire.send("echo", [b"fine"])
        assert answers(wire.results(1)) == {ids[0]: b"fine"}
    logged = [r for r in caplog.records if "handling a message failed" in r.getMessage()]
    assert logged and logged[0].exc_info is not None  # with its traceback
