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
