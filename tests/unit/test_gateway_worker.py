"""The gateway worker's transport wrapper: writes of one loop turn go out as one, in order."""

from __future__ import annotations

import asyncio
from typing import Any

from palm.gateway.worker import JOIN_LIMIT, _OneWrite


class FakeTransport:
    def __init__(self) -> None:
        self.writes: list[bytes] = []
        self.closed = False

    def write(self, data: bytes) -> None:
        assert not self.closed
        self.writes.append(bytes(data))

    def is_closing(self) -> bool:
        return self.closed

    def close(self) -> None:
        self.closed = True

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return ("127.0.0.1", 8000) if name == "sockname" else default


def test_writes_of_one_turn_go_out_as_one() -> None:
    async def main() -> FakeTransport:
        raw = FakeTransport()
        joined = _OneWrite(raw, asyncio.get_running_loop())  # type: ignore[arg-type]
        joined.write(b"HTTP/1.1 200 OK\r\n\r\n")
        joined.write(b"body")
        assert raw.writes == []  # held until the turn ends
        await asyncio.sleep(0)
        joined.write(b"next")
        await asyncio.sleep(0)
        return raw

    assert asyncio.run(main()).writes == [b"HTTP/1.1 200 OK\r\n\r\nbody", b"next"]


def test_close_and_large_writes_flush_first() -> None:
    async def main() -> FakeTransport:
        raw = FakeTransport()
        joined = _OneWrite(raw, asyncio.get_running_loop())  # type: ignore[arg-type]
        joined.write(b"head")
        joined.write(b"x" * JOIN_LIMIT)
        joined.write(b"tail")
        joined.close()
        await asyncio.sleep(0)  # the scheduled flush finds nothing left
        return raw

    raw = asyncio.run(main())
    assert raw.writes == [b"head", b"x" * JOIN_LIMIT, b"tail"]
    assert raw.closed


def test_other_attributes_are_the_transports() -> None:
    raw = FakeTransport()
    joined = _OneWrite(raw, asyncio.new_event_loop())  # type: ignore[arg-type]
    assert joined.get_extra_info("sockname") == ("127.0.0.1", 8000)
    assert not joined.is_closing()
    joined._loop.close()
