"""What the in-process engine tests share: an echo worker and a check on a call's results."""

from __future__ import annotations

from collections.abc import Iterable

from palm import RemoteError
from palm.standalone import Worker


class Echo(Worker):
    def echo(self, message: bytes) -> bytes:
        return message


def ok(outcomes: Iterable[bytes | RemoteError]) -> list[bytes]:
    """The results of a call, sorted; a test failure if one of them is an error."""
    results: list[bytes] = []
    for outcome in outcomes:
        assert isinstance(outcome, bytes), outcome
        results.append(outcome)
    return sorted(results)
