"""How the gateway reads JSON from clients and writes results as JSON, safely.

Reading: :func:`parse_items` turns a ``/map`` body into the JSON text of each
item, and refuses anything it cannot parse (invalid UTF-8 or JSON, nesting
too deep, an integer too long, a body that is not an array) with
:class:`MalformedBody`, never another exception.

Writing: :func:`result_json` turns one result's bytes into a JSON value's
text (the value when the bytes are JSON text, else a string holding their
base64); :func:`python_json` writes a Python value (a function service's
result). Both write an integer with more digits than Python converts to text
by default (``sys.int_info.default_max_str_digits``, 4,300) as a JSON string
of its decimal digits, converted piecewise so the process-wide limit is
neither hit nor changed.
"""

from __future__ import annotations

import base64
import json
import sys
from typing import Any

__all__ = [
    "MAX_INT_DIGITS",
    "MalformedBody",
    "decimal_text",
    "parse_items",
    "python_json",
    "result_json",
]

#: Integers with more digits than this are written as JSON strings.
MAX_INT_DIGITS: int = sys.int_info.default_max_str_digits

# str() of a number under 10**_PIECE is allowed whatever the process-wide
# limit is set to (the smallest limit allowed is 640 digits).
_PIECE = 512
_SMALL = 10**_PIECE
_LONG = 10**MAX_INT_DIGITS  # the smallest integer over MAX_INT_DIGITS digits


class MalformedBody(ValueError):
    """A request body the gateway cannot parse."""


class BigDigits(str):
    """The decimal digits of an integer too long to be a JSON number here."""

    __slots__ = ()


def decimal_text(n: int) -> str:
    """``str(n)`` for an int of any size, without the int-to-str digit limit."""
    if -_SMALL < n < _SMALL:
        return str(n)
    sign, n = ("-", -n) if n < 0 else ("", n)
    powers = [_SMALL]  # powers[k] = 10 ** (_PIECE * 2**k)
    while powers[-1] * powers[-1] <= n:
        powers.append(powers[-1] * powers[-1])
    parts: list[str] = []

    def write(value: int, level: int, width: int) -> None:
        # value < 10 ** (_PIECE * 2 ** (level + 1)); width 0: no leading zeros
        if level < 0:
            text = str(value)
            parts.append(text.zfill(width) if width else text)
            return
        high, low = divmod(value, powers[level])
        half = _PIECE << level
        if high or width:
            write(high, level - 1, max(width - half, 0) if width else 0)
            write(low, level - 1, half)
        else:
            write(low, level - 1, 0)

    write(n, len(powers) - 1, 0)
    return sign + "".join(parts)


def _too_long(n: int) -> bool:
    return not -_LONG < n < _LONG


def _parse_int(text: str) -> int | BigDigits:
    if len(text.lstrip("-")) > MAX_INT_DIGITS:
        return BigDigits(text)
    return int(text)


def parse_items(body: bytes) -> list[bytes]:
    """The JSON text of each item of a ``/map`` body (a JSON array)."""
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise MalformedBody(f"not UTF-8: {exc}") from None
    try:
        items = json.loads(text)  # an integer over the limit is a ValueError here
    except RecursionError:
        raise MalformedBody("not JSON: nested too deeply") from None
    except ValueError as exc:
        raise MalformedBody(f"not JSON: {exc}") from None
    if not isinstance(items, list):
        raise MalformedBody("expected a JSON array")
    try:
        return [json.dumps(item).encode() for item in items]
    except RecursionError:
        raise MalformedBody("not JSON: nested too deeply") from None


def result_json(result: bytes) -> str:
    """One result as JSON text: its value when it is JSON text, else base64 text."""
    try:
        value = json.loads(result.decode("utf-8"), parse_int=_parse_int)
        return json.dumps(value)
    except (ValueError, RecursionError):
        return json.dumps(base64.b64encode(result).decode("ascii"))


def python_json(value: Any) -> str:
    """A Python value as JSON text, long integers as strings of decimal digits.

    Raises ``TypeError`` for a value JSON cannot hold and ``RecursionError``
    for one nested too deeply.
    """
    try:
        return json.dumps(value)
    except ValueError:  # an int over the int-to-str limit somewhere inside
        return json.dumps(_long_ints_as_text(value))


def _long_ints_as_text(value: Any) -> Any:
    if isinstance(value, int) and not isinstance(value, bool):
        return decimal_text(value) if _too_long(value) else value
    if isinstance(value, list | tuple):
        return [_long_ints_as_text(item) for item in value]
    if isinstance(value, dict):
        return {
            _long_ints_as_text(key) if isinstance(key, int) else key: _long_ints_as_text(item)
            for key, item in value.items()
        }
    return value
