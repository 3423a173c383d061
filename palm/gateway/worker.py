"""palm's gunicorn worker class for the gateway (``--worker-class palm.gateway.worker.EdgeWorker``).

gunicorn stays the process manager (the arbiter forks, watches and restarts
the workers, and owns the listening socket); each worker runs uvicorn's event
loop (uvloop, the httptools parser) serving :func:`palm.gateway.asgi.create_asgi_app`.
Keep-alive follows gunicorn's ``--keep-alive``; uvicorn's own access log and
``server`` header are off (the gateway logs and counts requests itself), and
so is its proxy-headers middleware (behind Envoy the gateway reads no client
address).

uvicorn writes a response's head and its body with one system call each: two
TCP segments for every small answer, which the proxy in front then reads
apart. :class:`OneWriteProtocol` sends what one turn of the event loop wrote
to a connection as one write instead.
"""

from __future__ import annotations

import asyncio
from typing import Any, cast

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
from uvicorn_worker import UvicornWorker

__all__ = ["EdgeWorker", "OneWriteProtocol"]

#: A write at least this long goes out at once, not copied into a joined buffer.
JOIN_LIMIT = 64 * 1024


class _OneWrite:
    """A connection's transport whose writes of one turn of the loop go out together.

    The first write of a turn schedules the flush (the next turn); a large write,
    ``write_eof`` and ``close`` flush what is held first, so the bytes
    keep their order and nothing written before a close is lost. Everything
    else is the transport's own.
    """

    __slots__ = ("_held", "_loop", "_transport")

    def __init__(self, transport: asyncio.Transport, loop: asyncio.AbstractEventLoop) -> None:
        self._transport = transport
        self._loop = loop
        self._held: list[bytes] = []

    def write(self, data: bytes) -> None:
        if len(data) >= JOIN_LIMIT:
            self.flush()
            self._transport.write(data)
            return
        if not self._held:
            self._loop.call_soon(self.flush)
        self._held.append(data)

    def flush(self) -> None:
        if not self._held:
            return
        held, self._held = self._held, []
        if not self._transport.is_closing():
            self._transport.write(held[0] if len(held) == 1 else b"".join(held))

    def write_eof(self) -> None:
        self.flush()
        self._transport.write_eof()

    def close(self) -> None:
        self.flush()
        self._transport.close()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._transport, name)


class OneWriteProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol writing through :class:`_OneWrite`."""

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        joined = _OneWrite(transport, asyncio.get_running_loop())
        super().connection_made(cast(asyncio.Transport, joined))


class EdgeWorker(UvicornWorker):  # type: ignore[misc]
    CONFIG_KWARGS: dict[str, Any] = {
        "loop": "auto",  # uvloop when installed
        "http": OneWriteProtocol,  # the httptools parser
        "lifespan": "on",
        "access_log": False,
        "server_header": False,
        "proxy_headers": False,
    }
