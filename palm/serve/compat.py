"""What pylm 0.14's servers did that :mod:`palm.servers` keeps doing.

pylm's servers took ``log_level`` (and, with no logging configured, logged
to stdout with a timestamp), stopped after ``messages`` messages, and let a
Pipeline or Sink function return ``None`` to deliver nothing. These are the
parts of :mod:`palm.servers` that do it, and the check that a server is
given one spelling of each address (pylm's or palm's).
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable
from typing import Any

from palm.errors import ConfigError
from palm.serve.stream import Message, StreamRouting, explode
from palm.wire.protocol import ErrorInfo, Header

__all__ = [
    "PYLM_LOG_FORMAT",
    "DropsNone",
    "MessageLimit",
    "message_limit",
    "one_of",
    "setup_logging",
]

#: How pylm's servers logged when nothing else was configured.
PYLM_LOG_FORMAT = "%(asctime)s - %(name)s - %(levelname)s - %(message)s"


def setup_logging(logger: logging.Logger, level: int | str) -> None:
    """Set ``logger``'s level; with no handler configured anywhere, log to stdout
    with a timestamp, as pylm's servers did."""
    logger.setLevel(level)
    if not logger.hasHandlers():
        handler = logging.StreamHandler(sys.stdout)
        handler.setFormatter(logging.Formatter(PYLM_LOG_FORMAT))
        logger.addHandler(handler)


def one_of(server: str, pylm_name: str, pylm_value: Any, palm_name: str, palm_value: Any) -> Any:
    """The value given as ``pylm_name`` or as ``palm_name`` (both spell the same
    address); ConfigError naming both when they disagree or neither is given."""
    if pylm_value is not None and palm_value is not None and pylm_value != palm_value:
        raise ConfigError(
            f"{server!r}: {pylm_name} (pylm's name) and {palm_name} (palm's name) are the same "
            f"address and disagree ({pylm_value!r} and {palm_value!r}); give one of them"
        )
    value = pylm_value if pylm_value is not None else palm_value
    if value is None:
        raise ConfigError(f"{server!r} needs {pylm_name} (or, in palm's words, {palm_name})")
    return value


def message_limit(messages: int | None) -> int | None:
    """pylm's ``messages=``: None (or ``sys.maxsize``, pylm's default) for no limit."""
    if messages is None or messages >= sys.maxsize:
        return None
    if isinstance(messages, bool) or not isinstance(messages, int) or messages < 1:
        raise ConfigError(f"messages must be a positive number of messages, got {messages!r}")
    return messages


class MessageLimit:
    """Counts messages and calls ``stop`` once ``limit`` have been handled."""

    def __init__(self, limit: int | None, stop: Callable[[], None]) -> None:
        self.limit = limit
        self.stop = stop
        self.seen = 0

    def count(self, n: int) -> None:
        """``n`` more messages were handled."""
        if self.limit is None or n <= 0:
            return
        self.seen += n
        if self.seen >= self.limit:
            self.stop()


class DropsNone(StreamRouting):
    """A stream stage whose functions may return ``None``: that result goes nowhere.

    Mixed into :class:`palm.servers.Pipeline` and :class:`palm.servers.Sink`
    (a tee's branch that has nothing to say). Everywhere else ``None`` is
    still a :class:`~palm.errors.BadResult`.
    """

    _palm_framework = True
    _dropped: set[int]

    def call(
        self,
        func: Callable[[bytes], Any],
        function: str,
        payload: bytes,
        offset: int,
        stage: int,
        request_id: object = None,
    ) -> tuple[bytes, ErrorInfo | None]:
        """Run one user call; a ``None`` result marks its message as dropped."""
        nothing: list[bool] = []

        def run(message: bytes) -> Any:
            result = func(message)
            if result is None:
                nothing.append(True)
                return b""
            return result

        result, error = super().call(  # type: ignore[misc]
            run, function, payload, offset, stage, request_id
        )
        if nothing and error is None:
            if not hasattr(self, "_dropped"):
                self._dropped = set()
            self._dropped.add(offset)
        return result, error

    def _send_on(self, header: Header, payloads: list[bytes]) -> None:
        dropped = getattr(self, "_dropped", None)
        if not dropped:
            super()._send_on(header, payloads)
            return
        self._dropped = set()
        kept: list[Message] = [
            message
            for offset, message in enumerate(explode(header, payloads))
            if offset not in dropped
        ]
        if kept:
            self._send_each(kept)
