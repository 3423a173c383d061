"""Binding every interface without CURVE keys is said out loud; loopback and keyed binds are not."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
import zmq

from palm.serve.loop import Sockets
from palm.wire.security import Keys, Security, generate


def bind_once(address: str, security: Security | None = None) -> None:
    sockets = Sockets("test-server", {}, None, security=security)
    try:
        sockets.bind(zmq.PULL, address, "pull")
    finally:
        sockets.close()


def warnings_of(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]


def test_a_wildcard_bind_without_keys_warns(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING):
        bind_once("tcp://0.0.0.0:*")
    (message,) = warnings_of(caplog)
    assert "every interface without CURVE keys" in message and "--keys" in message


def test_loopback_binds_and_keyed_wildcard_binds_do_not_warn(
    caplog: pytest.LogCaptureFixture, tmp_path: Path
) -> None:
    with caplog.at_level(logging.WARNING):
        bind_once("tcp://127.0.0.1:*")
        bind_once("tcp://0.0.0.0:*", Security(Keys(generate(tmp_path / "keys")), "stage"))
    assert warnings_of(caplog) == []
