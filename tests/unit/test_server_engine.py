"""The standalone server's answers, in one process through palm.testing.

User errors, unknown functions and results that are not bytes come back as
errors of the right class with what happened on the server; an oversized
message is refused with ``PayloadTooLarge``; malformed frames are counted
and dropped, and the server keeps serving. Single small jobs take the
server's compact path and larger ones the general path: both are checked.
"""

from __future__ import annotations

from collections.abc import Iterator

import msgpack
import pytest

from palm import BadResult, RemoteError, UnknownFunction
from palm.standalone import Server
from palm.testing import LocalServer, answers
from palm.wire.protocol import Header, Kind, decode, jobs_in

pytestmark = pytest.mark.timeout(30)

LIMIT = 64 * 1024
#: a payload for the compact path, and one for the general path
SIZES = {"small": 10, "large": 20_000}


class Tools(Server):
    def echo(self, message: bytes) -> bytes:
        return message

    def boom(self, message: bytes) -> bytes:
        raise ValueError(f"boom on {len(message)} bytes")

    def text(self, message: bytes) -> str:
        return "not bytes"

    def picky(self, message: bytes) -> bytes:
        if message == b"bad":
            raise KeyError("bad")
        return message


@pytest.fixture
def local() -> Iterator[LocalServer[Tools]]:
    with LocalServer(Tools, "tools", max_message_bytes=LIMIT) as local:
        yield local


@pytest.mark.parametrize("size", SIZES)
def test_a_user_exception_comes_back_as_a_remote_error(
    local: LocalServer[Tools], size: str
) -> None:
    client = local.client()
    payload = b"x" * SIZES[size]
    with pytest.raises(RemoteError) as caught:
        client.job("boom", payload)
    error = caught.value
    assert type(error) is RemoteError
    assert error.remote_type == "ValueError"
    assert error.remote_message == f"boom on {len(payload)} bytes"
    assert error.server == "tools"
    assert "raise ValueError" in error.remote_traceback
    assert client.job("echo", payload) == payload


@pytest.mark.parametrize("size", SIZES)
def test_an_unknown_function_comes_back_listing_the_functions(
    local: LocalServer[Tools], size: str
) -> None:
    client = local.client()
    with pytest.raises(UnknownFunction) as caught:
        client.job("nope", b"x" * SIZES[size])
    assert caught.value.remote_message == (
        "'tools' has no function 'nope'; it has: boom, echo, picky, text"
    )


def test_a_misspelled_server_name_is_named_with_the_server_that_answered(
    local: LocalServer[Tools],
) -> None:
    from palm.call.request import Client

    client = Client(local.address, "tolos", timeout_s=local.timeout_s)
    try:
        with pytest.raises(UnknownFunction) as caught:
            client.job("echo", b"x")
    finally:
        client.close()
    assert caught.value.remote_message == (
        "no server 'tolos' here: this is 'tools' (functions: boom, echo, picky, text); "
        "call tools.echo or check the server name"
    )


@pytest.mark.parametrize("size", SIZES)
def test_a_result_that_is_not_bytes_comes_back_as_BadResult(
    local: LocalServer[Tools], size: str
) -> None:
    client = local.client()
    with pytest.raises(BadResult) as caught:
        client.job("text", b"x" * SIZES[size])
    assert caught.value.remote_message == "tools.text returned str, not bytes"


def test_an_oversized_message_is_refused_with_PayloadTooLarge(local: LocalServer[Tools]) -> None:
    client = local.client(max_message_bytes=4 * LIMIT)
    with pytest.raises(RemoteError) as caught:
        client.job("echo", b"x" * (LIMIT + 1))
    assert caught.value.remote_type == "palm.PayloadTooLarge"
    assert f"over the limit of {LIMIT} bytes" in caught.value.remote_message
    assert client.job("echo", b"fits") == b"fits"


def test_each_job_of_a_batch_gets_its_own_result_or_error(local: LocalServer[Tools]) -> None:
    peer = local.peer()
    header = Header(Kind.JOB, 0, b"me", "tools.picky")
    reply = peer.request(header, [b"a", b"bad", b"c"])
    outcomes = answers([reply])
    first = reply.header.id
    assert outcomes[first] == b"a" and outcomes[first + 2] == b"c"
    error = outcomes[first + 1]
    assert isinstance(error, RemoteError) and error.remote_type == "KeyError"


def test_malformed_frames_are_counted_and_the_server_keeps_serving(
    local: LocalServer[Tools],
) -> None:
    peer = local.peer()
    job = Header(Kind.JOB, 1, b"me", "tools.echo")
    garbage: list[list[bytes]] = [
        [b"\xff not msgpack"],
        [b""],
        [msgpack.packb([1, 2, 3])],  # not an 11-item header
        [Header(Kind.JOB, 1, b"me", "tools.echo", version=99).to_wire(), b"x"],
        [job.to_wire()],  # a job without a payload
        [b"\xc1\x00\x40" + b"short"],  # a compact frame shorter than its header
        [Header(Kind.RESULT, 1, b"me").to_wire(), b"x"],  # not something a server takes
    ]
    for frames in garbage:
        peer.send(frames)
    # a job whose payloads do not unpack is answered: a ProtocolError per job announced
    peer.send([Header(Kind.JOB, 7, b"me", "tools.echo", packed=2).to_wire(), b"not packed"])
    header, payloads = decode(peer.recv())
    assert (header.kind, header.id, len(jobs_in(header, payloads))) == (Kind.RESULT, 7, 2)
    assert [e.type for e in header.errors or ()] == ["palm.ProtocolError"] * 2
    # the server reads one peer's messages in order: this answer comes after them all
    pong = peer.request(Header(Kind.PING))
    assert pong.payloads == [b"pong"]
    assert local.info()["malformed"] == len(garbage) + 1
    assert local.client().job("echo", b"still serving") == b"still serving"
