"""Stream helpers: routes, end-marker counts, the outbox, hook messages."""

from __future__ import annotations

import zmq

from palm.serve.outlets import Outbox
from palm.serve.stream import EndTracker, explode, function_for
from palm.wire.protocol import ErrorInfo, Header, Kind


def test_a_route_gives_each_server_the_entry_naming_it() -> None:
    route = "source.prep left.tag right.tag sink.done"
    assert function_for(route, "left") == "left.tag"
    assert function_for(route, "sink") == "sink.done"
    assert function_for(route, "nobody") == ""
    assert function_for("step2.bar", "step2") == "step2.bar"


def test_end_tracker_counts_per_pipeline_and_forgets_the_oldest() -> None:
    ends = EndTracker(limit=2)
    ends.count(b"a", 3)
    ends.count(b"a", 2)
    ends.count(None, 9)
    assert ends.pop(b"a") == 5
    assert ends.pop(b"a") == 0
    for p in (b"x", b"y", b"z"):
        ends.count(p, 1)
    assert ends.pop(b"x") == 0
    assert ends.pop(b"z") == 1


def test_explode_keeps_ids_stage_and_each_payloads_error() -> None:
    error = ErrorInfo(1, "ValueError", "bad", "", "step2", 2)
    header = Header(Kind.JOB, 10, b"c", "f", 2, b"p", errors=[error])
    messages = explode(header, [b"a", b"", b"c"])
    assert [m.id for m in messages] == [10, 11, 12]
    assert [m.error for m in messages] == [None, error, None]
    assert {(m.stage, m.pipeline, m.client) for m in messages} == {(2, b"p", b"c")}
    assert messages[1].header(Kind.RESULT).errors == [error]


def test_outbox_keeps_order_while_the_socket_has_no_room() -> None:
    ctx = zmq.Context()
    push = ctx.socket(zmq.PUSH)
    push.setsockopt(zmq.SNDHWM, 1)
    push.setsockopt(zmq.LINGER, 0)
    push.bind("inproc://outbox")
    try:
        outbox = Outbox(push, limit=3)
        for i in range(5):
            outbox.send([b"%d" % i])
        assert outbox.full
        pull = ctx.socket(zmq.PULL)
        pull.setsockopt(zmq.LINGER, 0)
        pull.connect("inproc://outbox")
        got: list[bytes] = []
        for _ in range(200):
            outbox.flush()
            while pull.poll(10):
                got.append(pull.recv())
            if len(got) == 5:
                break
        assert got == [b"0", b"1", b"2", b"3", b"4"]
        assert len(outbox) == 0
        pull.close()
    finally:
        push.close()
        ctx.term()
