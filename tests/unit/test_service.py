"""User functions: discovery, resolution and the call rule."""

from __future__ import annotations

import pytest

from palm.errors import ConfigError
from palm.standalone import Server, Worker


class Mine(Server):
    def foo(self, message: bytes) -> bytes:
        return message

    def start_engine(self, message: bytes) -> bytes:
        return b"vroom"

    def _private(self, message: bytes) -> bytes:
        return message

    def text(self, message: bytes) -> str:
        return "no"


class MyWorker(Worker):
    def bar(self, message: bytes) -> bytes:
        return message


def test_public_methods_of_the_subclass_are_the_functions() -> None:
    assert Mine("s", "tcp://127.0.0.1:*").functions == ["foo", "start_engine", "text"]
    assert MyWorker("w", "tcp://127.0.0.1:1", "tcp://127.0.0.1:2").functions == ["bar"]


def test_bare_and_qualified_names_resolve() -> None:
    server = Mine("s", "tcp://127.0.0.1:*")
    assert server.resolve("foo") is not None
    assert server.resolve("s.foo") is not None
    assert server.resolve("other.foo") is None
    assert server.resolve("start") is None


def test_a_non_bytes_result_is_a_bad_result_error() -> None:
    server = Mine("s", "tcp://127.0.0.1:*")
    func = server.resolve("text")
    assert func is not None
    result, error = server.call(func, "text", b"", 0, 0)
    assert result == b""
    assert error is not None and error.type == "palm.BadResult"


def test_names_with_dots_and_bad_addresses_are_config_errors() -> None:
    with pytest.raises(ConfigError):
        Mine("a.b", "tcp://127.0.0.1:*")
    with pytest.raises(ConfigError):
        Mine("s", "127.0.0.1:5555")


def test_a_batch_runs_each_job_once_and_answers_each_failure_in_its_place() -> None:
    from palm.wire.protocol import Header, Kind

    server = Mine("s", "tcp://127.0.0.1:*")
    calls: list[bytes] = []

    def flaky(message: bytes) -> object:
        calls.append(message)
        if message.startswith(b"raise"):
            raise ValueError(message.decode())
        if message == b"text":
            return "not bytes"
        return bytearray(message) if message == b"array" else message

    payloads = [b"a", b"array", b"text", b"raise1", b"b", b"raise2", b"c"]
    results, errors = server.call_all(flaky, Header(Kind.JOB, 1, function="flaky"), payloads)
    assert calls == payloads  # every job ran, and ran once
    assert results == [b"a", b"array", b"", b"", b"b", b"", b"c"]
    assert [(e.offset, e.type) for e in errors] == [
        (2, "palm.BadResult"),
        (3, "ValueError"),
        (5, "ValueError"),
    ]
