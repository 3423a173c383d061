"""A single compact job takes the server's short path: the same answers as the general one."""

from __future__ import annotations

import uuid

import pytest

from palm.errors import RemoteError
from palm.standalone import Server
from palm.wire.messages import encode_compact, reply_head
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
    assert short._handle(frames) == general._handle(frames)
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
