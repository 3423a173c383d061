"""``palm logs --since`` values and the one-line record format."""

from __future__ import annotations

import datetime as dt

import pytest

from palm.commands.logs import format_record, parse_since
from palm.errors import ConfigError

pytestmark = pytest.mark.timeout(30)

NOW = 1_800_000_000.0


def test_durations_count_back_from_now() -> None:
    assert parse_since("30s", now=NOW) == NOW - 30
    assert parse_since("10m", now=NOW) == NOW - 600
    assert parse_since("2h", now=NOW) == NOW - 7200
    assert parse_since("1.5d", now=NOW) == NOW - 1.5 * 86400


def test_epoch_seconds_and_iso_times_are_absolute() -> None:
    assert parse_since("1700000000.5", now=NOW) == 1700000000.5
    assert (
        parse_since("2024-01-02T03:04:05+00:00", now=NOW)
        == dt.datetime(2024, 1, 2, 3, 4, 5, tzinfo=dt.UTC).timestamp()
    )


def test_nonsense_is_a_config_error() -> None:
    with pytest.raises(ConfigError):
        parse_since("yesterday-ish", now=NOW)


def test_a_record_prints_on_one_line_with_its_origin() -> None:
    line = format_record(
        {
            "time": NOW,
            "level": "INFO",
            "server": "echo",
            "worker": "w3",
            "host": "h1",
            "pid": 42,
            "request_id": "r-9",
            "message": "hello",
            "logger": "palm.echo",
        }
    )
    assert "INFO" in line and "echo/w3 h1:42 [r-9] palm.echo: hello" in line
