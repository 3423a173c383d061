"""Client lifecycle and timeouts on the one client core (no server needed)."""

from __future__ import annotations

import pytest

from palm import ClientClosed
from palm.call.base import DEFAULT, DEFAULT_TIMEOUT_S, ClientState
from palm.call.chain import StreamClient
from palm.call.parallel import ParallelClient
from palm.call.request import Client
from palm.call.shared import SharedClient
from palm.errors import ConfigError, TimeoutError

NOWHERE = "tcp://127.0.0.1:9"


def test_one_default_timeout_for_every_client() -> None:
    assert DEFAULT_TIMEOUT_S == 60.0
    clients = [
        Client(NOWHERE, "s"),
        ParallelClient(NOWHERE, NOWHERE, None, "m"),
        StreamClient(NOWHERE, NOWHERE, None, "s"),
        SharedClient(NOWHERE, NOWHERE, None, "m"),
    ]
    for client in clients:
        assert client.timeout_s == DEFAULT_TIMEOUT_S
        assert client.resolve_timeout(DEFAULT) == DEFAULT_TIMEOUT_S
        assert client.resolve_timeout(None) is None
        assert client.resolve_timeout(2.5) == 2.5
        with pytest.raises(ConfigError):
            client.resolve_timeout(0)
        client.close()


def test_unopened_opened_closed_and_close_is_idempotent() -> None:
    client = Client(NOWHERE, "s", timeout_s=0.05)
    assert client.state is ClientState.UNOPENED
    with pytest.raises(TimeoutError):
        client.job("f", b"x")
    # a timeout recycles the socket: not a close, the next call makes a new one
    assert client.state is ClientState.OPENED
    with pytest.raises(TimeoutError):
        client.job("f", b"x")
    client.close()
    client.close()
    assert client.state is ClientState.CLOSED
    with pytest.raises(ClientClosed, match="closed"):
        client.job("f", b"x")
    assert issubclass(ClientClosed, RuntimeError)


def test_a_closed_client_does_not_reopen() -> None:
    parallel = ParallelClient(NOWHERE, NOWHERE, None, "m", timeout_s=0.05)
    with parallel:
        pass
    with pytest.raises(ClientClosed):
        parallel.eval("f", b"x")
    with pytest.raises(ClientClosed):
        list(parallel.job("f", [b"x"]))
    with pytest.raises(ClientClosed):
        parallel.sockets()
    shared = SharedClient(NOWHERE, NOWHERE, None, "m")
    shared.close()
    with pytest.raises(ClientClosed):
        shared.eval("f", b"x")
    chain = StreamClient(NOWHERE, NOWHERE, None, "s")
    chain.close()
    with pytest.raises(ClientClosed):
        list(chain.job("f", [b"x"]))


def test_qualify_and_payload_checks() -> None:
    client = ParallelClient(NOWHERE, NOWHERE, None, "m")
    assert client.qualify("f") == "m.f"
    assert client.qualify("other.f") == "other.f"
    with pytest.raises(ConfigError):
        client.qualify("")
    with pytest.raises(TypeError):
        client.payload("text")
    assert client.payload(bytearray(b"ab")) == b"ab"


def test_a_function_name_that_is_no_name_is_a_config_error_before_anything_is_sent() -> None:
    client = Client(NOWHERE, "s", timeout_s=0.05)
    for bad in ("", None, ["f"], 3):
        with pytest.raises(ConfigError, match="function must be a non-empty string"):
            client.job(bad, b"x")  # type: ignore[arg-type]
    assert client.state is ClientState.UNOPENED
    assert client._tails == {}
    client.close()
