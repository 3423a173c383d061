"""palm.ops.ports: free ports handed to processes that listen a moment later."""

from __future__ import annotations

import socket

import pytest

from palm.ops import ports


def test_free_ports_are_distinct_bindable_and_below_the_ephemeral_range() -> None:
    low = ports._ephemeral_low()
    chosen = [ports.free_port() for _ in range(40)]
    assert len(set(chosen)) == len(chosen)  # none handed out twice, though none is bound
    assert all(1024 <= port < low for port in chosen)
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", chosen[-1]))  # free to listen on


def test_a_port_the_range_cannot_offer_comes_from_the_os(monkeypatch: pytest.MonkeyPatch) -> None:
    # every port below the ephemeral range is taken (or handed out): the OS picks one
    monkeypatch.setattr(ports, "_ephemeral_low", lambda: 2000)
    monkeypatch.setattr(ports, "_handed_out", set(range(1024, 2000)))
    port = ports.free_port()
    assert port >= 2000
    assert port in ports._handed_out
    assert ports.holder("127.0.0.1", port) is None
