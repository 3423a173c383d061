"""A single compact job takes the server's short path: the same answers as the general one."""

from __future__ import annotations

import re
import uuid
from typing import Any

import pytest

from palm.errors import RemoteError
from palm.standalone import Server
from palm.wire.messages import (
    compact,
    compact_reply,
    encode_compact,
    job_head,
    job_tail,
    reply_head,
)
from palm.wire.protocol import Header, Kind, decode, jobs_in

CLIENT = uuid.uuid4().bytes


class Tools(Server):
    def echo(self, message: bytes) -> bytes:
        return message

    def boom(self, message: bytes) -> bytes:
        raise ValueError("boom " + message.decode())

    def text(self, message: bytes) -> str:
        return "not bytes"


class General(Tools):
    """handle_job overridden (with the same behaviour): the general path only."""

    def handle_job(self, header: Header, payloads: list[bytes]) -> tuple[Header, list[bytes]]:
        self.general_calls = getattr(self, "general_calls", 0) + 1
        return super().handle_job(header, payloads)


def request(function: str, payload: bytes, job_id: int = 7, **extra: str) -> list[bytes]:
    header = Header(Kind.JOB, job_id, CLIENT, f"tools.{function}", extra=extra or None)
    return [b"identity", *encode_compact(header, payload)]


def same_answer(reply: list[bytes] | None) -> object:
    """``reply`` decoded, each error's traceback without the line of palm's own
    code that called the function (each path calls it from a line of its own)."""
    assert reply is not None
    header, payloads = decode(reply[1:])
    for error in header.errors or []:
        if error.type == "ValueError":  # what boom raised
            assert error.traceback.startswith("Traceback") and ", in boom\n" in error.traceback
        error.traceback = re.sub(r'  File "[^"]*/palm/[^\n]*\n(    [^\n]*\n)+', "", error.traceback)
    return reply[0], header, payloads


@pytest.mark.parametrize(
    ("function", "payload", "extra"),
    [
        ("echo", b"hello", {}),
        ("echo", b"", {}),
        ("echo", b"x" * 20_000, {}),  # a result too big to travel compact
        ("echo", b"with id", {"request_id": "r-1"}),
        ("boom", b"now", {}),
        ("text", b"", {}),
        ("nothing", b"", {}),  # unknown: the short path declines it
    ],
)
def test_the_short_path_answers_as_the_general_path(
    function: str, payload: bytes, extra: dict[str, str]
) -> None:
    short, general = Tools("tools", "tcp://127.0.0.1:*"), General("tools", "tcp://127.0.0.1:*")
    assert short._fast_jobs and not general._fast_jobs
    frames = request(function, payload, **extra)
    assert same_answer(short._handle(frames)) == same_answer(general._handle(frames))
    assert general.general_calls == 1
    assert (short.handled, short.failed) == (general.handled, general.failed)


def test_a_successful_reply_is_the_request_header_with_the_result_kind() -> None:
    server = Tools("tools", "tcp://127.0.0.1:*")
    frames = request("echo", b"payload", job_id=12345, request_id="abc")
    reply = server._handle(frames)
    assert reply is not None and reply[0] == b"identity"
    header, payloads = decode(reply[1:])
    assert (header.kind, header.id, header.client, header.errors) == (
        Kind.RESULT,
        12345,
        CLIENT,
        None,
    )
    assert header.extra == {"request_id": "abc"}
    assert jobs_in(header, payloads) == [b"payload"]
    sent = Header(Kind.JOB, 12345, CLIENT, "tools.echo", extra={"request_id": "abc"}).to_wire()
    assert reply_head(sent) == header.to_wire()


def test_an_error_travels_back_from_the_short_path() -> None:
    server = Tools("tools", "tcp://127.0.0.1:*")
    reply = server._handle(request("boom", b"x"))
    assert reply is not None
    header, _ = decode(reply[1:])
    assert header.errors is not None and len(header.errors) == 1
    error = header.errors[0].to_exception("tools.boom")
    assert isinstance(error, RemoteError)
    assert error.remote_type == "ValueError" and "boom x" in error.remote_message
    assert (server.handled, server.failed) == (1, 1)


def test_reply_head_declines_what_it_cannot_patch() -> None:
    assert reply_head(b"") is None
    assert reply_head(Header(Kind.PING, 1, CLIENT).to_wire()) is None
    assert reply_head(b"\x9b\x02\x01rest") is None  # another protocol version


def test_a_header_seen_before_is_answered_from_its_kept_route() -> None:
    server = Tools("tools", "tcp://127.0.0.1:*")
    for job_id in (1, 200, 70_000, 2**40):  # every width of an encoded id
        reply = server._handle(request("echo", str(job_id).encode(), job_id=job_id))
        assert reply is not None
        header, payloads = decode(reply[1:])
        assert (header.kind, header.id, header.client) == (Kind.RESULT, job_id, CLIENT)
        assert jobs_in(header, payloads) == [str(job_id).encode()]
    assert len(server._compact_routes) == 1  # one header but for the id: one route
    assert server.handled == 4


def test_a_header_naming_a_request_is_not_kept() -> None:
    server = Tools("tools", "tcp://127.0.0.1:*")
    for n in range(3):
        reply = server._handle(request("echo", b"x", request_id=f"r-{n}"))
        assert reply is not None
        assert decode(reply[1:])[0].extra == {"request_id": f"r-{n}"}
    assert server._compact_routes == {}


def test_kept_routes_stay_bounded_whatever_the_clients() -> None:
    server = Tools("tools", "tcp://127.0.0.1:*")
    for _ in range(600):  # a new client id each time: a new header tail
        header = Header(Kind.JOB, 1, uuid.uuid4().bytes, "tools.echo")
        assert server._handle([b"identity", *encode_compact(header, b"x")]) is not None
    assert 0 < len(server._compact_routes) <= 256
    assert server.handled == 600


def test_a_subclass_call_sees_every_job_of_the_short_path() -> None:
    class Counting(Tools):
        def call(self, *args: Any, **kwargs: Any) -> Any:
            self.calls = getattr(self, "calls", 0) + 1
            return super().call(*args, **kwargs)

    server = Counting("tools", "tcp://127.0.0.1:*")
    for _ in range(3):
        assert server._handle(request("echo", b"x")) is not None
    assert server.calls == 3


@pytest.mark.parametrize(
    "frame",
    [
        b"",
        b"\xc1\x00",
        b"\xc1\x00\x05\x9b\x01\x02",  # the header cut short
        b"\xc1\xff\xff"
        + Header(Kind.JOB, 1, CLIENT, "tools.echo").to_wire(),  # length past the end
        compact(Header(Kind.JOB, -5, CLIENT, "tools.echo").to_wire()),  # a negative id
        compact(Header(Kind.PING, 1, CLIENT).to_wire()),
        compact(b"\x9b\x01\x02\x01"),  # nothing after the id
    ],
)
def test_job_tail_declines_what_the_general_path_reads(frame: bytes) -> None:
    assert job_tail(frame) is None


def test_job_head_and_compact_reply_agree_with_the_encoder() -> None:
    header = Header(Kind.JOB, 0, CLIENT, "tools.echo")
    keyed = job_tail(compact(header.to_wire(), b"payload"))
    assert keyed is not None
    tail = keyed[0]
    for job_id in (0, 127, 128, 255, 256, 65_535, 65_536, 2**32, 2**64 - 1):
        header.id = job_id
        head = header.to_wire()
        assert job_head(job_id, tail) == head
        frame = compact(head, b"payload")
        assert job_tail(frame) == (tail, len(frame) - len(b"payload"))
        answer = reply_head(head)
        assert answer is not None
        assert compact_reply(frame, len(frame) - 7, b"result") == compact(answer, b"result")
