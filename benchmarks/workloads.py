"""The work the benchmarks ask for: standard library only, importable in every venv."""

from __future__ import annotations

from collections.abc import Sequence


def factorial(n: int) -> int:
    """Iterative factorial, the PUMA paper's map workload."""
    result = 1
    for k in range(2, n + 1):
        result *= k
    return result


def factorial_chunk(items: Sequence[int]) -> list[int]:
    return [factorial(n) for n in items]


def noop(item: object = None) -> None:
    """A task that does nothing: measures per-task overhead."""
    return None


def echo(message: bytes) -> bytes:
    return message


def chunks(items: Sequence[int], count: int) -> list[list[int]]:
    """Split ``items`` into ``count`` contiguous chunks of nearly equal length."""
    count = max(1, min(count, len(items)))
    size, extra = divmod(len(items), count)
    out: list[list[int]] = []
    start = 0
    for index in range(count):
        stop = start + size + (1 if index < extra else 0)
        out.append(list(items[start:stop]))
        start = stop
    return out
