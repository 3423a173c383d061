"""The sans-IO client session: when HELLO is due, what it is, and reading WELCOMEs."""

from __future__ import annotations

import pytest

from palm.errors import ConfigError
from palm.wire.messages import control
from palm.wire.protocol import Header, Kind, decode
from palm.wire.session import Session

CLIENT = b"c" * 16


def welcome(session: str | None, workers: int = 0) -> list[bytes]:
    return control(Kind.WELCOME, CLIENT, session=session, workers=workers)


def test_hello_is_due_until_welcomed_then_once_per_interval() -> None:
    s = Session(CLIENT, heartbeat_interval_s=1.0)
    assert not s.welcomed
    assert s.hello_due(0.0)
    frames = s.hello(0.0)
    header, payloads = decode(frames)
    assert (header.kind, header.client, payloads) == (Kind.HELLO, CLIENT, [])
    assert s.hello_at == 0.0
    assert s.hello_due(0.1)  # not welcomed yet: every call says HELLO
    assert not s.welcome(welcome("A", 3))
    assert s.welcomed and s.session_id == "A" and s.workers == 3
    assert not s.hello_due(0.5)
    assert s.hello_due(1.0)


def test_beat_is_due_after_an_interval_with_an_allowance_for_early_timers() -> None:
    s = Session(CLIENT, heartbeat_interval_s=1.0)
    s.hello(10.0)
    assert not s.beat_due(10.5)
    assert not s.beat_due(10.85, early_s=0.1)
    assert s.beat_due(10.95, early_s=0.1)
    assert s.beat_due(11.0)


def test_a_new_session_id_is_a_restart_the_same_one_is_not() -> None:
    s = Session(CLIENT)
    assert not s.welcome(welcome("A"))  # the first WELCOME is no restart
    assert not s.welcome(welcome("A", 2))
    assert s.workers == 2
    assert s.welcome(welcome("B"))
    assert s.session_id == "B"
    assert not s.welcome(welcome("B"))


def test_other_messages_and_garbage_are_ignored() -> None:
    s = Session(CLIENT)
    s.welcome(welcome("A", 4))
    assert not s.welcome([b"\xc1 not msgpack"])
    assert not s.welcome(control(Kind.HEARTBEAT, CLIENT))
    assert not s.read(Header(Kind.RESULT, 7, CLIENT))
    assert (s.session_id, s.workers) == ("A", 4)


def test_read_takes_a_decoded_header() -> None:
    s = Session(CLIENT)
    header, _ = decode(welcome("A", 1))
    assert not s.read(header)
    header, _ = decode(welcome("Z", 1))
    assert s.read(header)


def test_the_heartbeat_interval_must_be_positive() -> None:
    with pytest.raises(ConfigError):
        Session(CLIENT, heartbeat_interval_s=0)
