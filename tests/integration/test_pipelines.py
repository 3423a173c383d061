"""Pipelined servers in real processes: scatter/gather masters, hubs and sinks."""

from __future__ import annotations

import threading

import msgpack
import pytest

from palm.clients import Client
from palm.wire.protocol import Header, Kind, decode
from tests.fixtures.procs import Processes
from tests.fixtures.stages import ANY, stage, workers


def info(db_address: str) -> dict[str, object]:
    import zmq

    sock = zmq.Context.instance().socket(zmq.DEALER)
    sock.setsockopt(zmq.LINGER, 0)
    sock.connect(db_address)
    try:
        sock.send_multipart([Header(Kind.INFO, 1).to_wire()])
        assert sock.poll(10_000)
        _, payloads = decode(sock.recv_multipart())
        answer = msgpack.unpackb(payloads[0], raw=False)
        assert isinstance(answer, dict)
        return answer
    finally:
        sock.close()


def master(procs: Processes, name: str, **kwargs: object) -> dict[str, str]:
    _, addresses = stage(
        procs,
        "Splitter",
        name=name,
        pull_address=ANY,
        push_address=ANY,
        worker_pull_address=ANY,
        worker_push_address=ANY,
        db_address=ANY,
        **kwargs,
    )
    workers(procs, addresses["db"], 2)
    return addresses


@pytest.mark.timeout(90)
def test_scatter_makes_ten_jobs_of_one_and_gather_makes_one_result_of_ten(
    procs: Processes,
) -> None:
    addresses = master(procs, "split")
    with Client("split", addresses["db"], timeout_s=30) as client:
        results = list(client.job("part", [b"a", b"b", b"c"]))
        assert sorted(results) == [
            b",".join(p + b":%d" % i for i in range(10)) for p in (b"A", b"B", b"C")
        ]
        assert client.eval("split.part", b"x") == b",".join(b"X:%d" % i for i in range(10))


@pytest.mark.timeout(90)
def test_scatter_without_gather_streams_every_part_and_the_job_ends_by_itself(
    procs: Processes,
) -> None:
    addresses = master(procs, "split", gather=False)
    with Client("split", addresses["db"], timeout_s=30) as client:
        results = list(client.job("part", [b"a", b"b"]))
    assert sorted(results) == sorted(p + b":%d" % i for p in (b"A", b"B") for i in range(10))


@pytest.mark.timeout(90)
def test_a_hub_fed_by_a_pipelined_server_runs_every_message_on_its_workers(
    procs: Processes,
) -> None:
    _, source = stage(
        procs,
        "Source",
        name="source",
        db_address=ANY,
        pull_address=ANY,
        push_address=ANY,
        pipelined=True,
    )
    _, hub = stage(
        procs,
        "servers.Hub",
        name="hub",
        upstream_address=source["push"],
        push_address=ANY,
        worker_pull_address=ANY,
        worker_push_address=ANY,
        db_address=ANY,
        previous="source",
    )
    workers(procs, hub["db"], 2)
    payloads = [b"%d" % i for i in range(2_000)]
    with Client("source", source["db"], sub_address=hub["push"], timeout_s=30) as client:
        deliveries = list(client.deliveries("source.prep hub.work", payloads))
    assert sorted(d.payload for d in deliveries) == sorted(
        b"prepped " + p + b" worked" for p in payloads
    )
    assert {d.stage for d in deliveries} == {2}
    hub_info = info(hub["db"])
    assert len(hub_info["workers"]) == 2  # type: ignore[arg-type]


@pytest.mark.timeout(120)
def test_a_sink_reports_two_interleaved_pipelines_complete(procs: Processes) -> None:
    _, source = stage(
        procs,
        "Source",
        name="source",
        db_address=ANY,
        pull_address=ANY,
        push_address=ANY,
        pipelined=True,
        subscribers=2,
    )
    branches = {}
    for name in ("left", "right"):
        _, branches[name] = stage(
            procs,
            "Branch",
            name=name,
            db_address=ANY,
            upstream_address=source["push"],
            push_address=ANY,
            previous="source",
            to_client=False,
        )
    _, sink = stage(
        procs,
        "Collect",
        name="sink",
        db_address=ANY,
        upstream_addresses=[branches["left"]["push"], branches["right"]["push"]],
        push_address=ANY,
        previous=["left", "right"],
    )
    route = "source.prep left.tag right.tag sink.collect"
    got: dict[str, list[bytes]] = {}
    pipelines: dict[str, bytes] = {}
    errors: list[BaseException] = []

    def run(who: str) -> None:
        try:
            with Client(
                "source", source["db"], sub_address=sink["push"], timeout_s=30, window=50
            ) as c:
                pipeline = who.encode().ljust(16, b".")
                pipelines[who] = pipeline
                payloads = (f"{who}-{i}".encode() for i in range(300))
                got[who] = [d.payload for d in c.deliveries(route, payloads, pipeline=pipeline)]
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(who,)) for who in ("one", "two")]
    for t in threads:
        t.start()
    for t in threads:
        t.join(100)
    assert not errors
    for who in ("one", "two"):
        assert sorted(got[who]) == sorted(
            f"{side}:prepped {who}-{i} collected".encode()
            for side in ("left", "right")
            for i in range(300)
        )
    completed = info(sink["db"])["completed"]
    assert sorted((c["pipeline"], c["messages"]) for c in completed) == sorted(  # type: ignore[index, union-attr]
        (pipelines[who].hex(), 600) for who in ("one", "two")
    )
