"""A standalone server in a thread of the test process, with its clients."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any, Generic, TypeVar

from palm.call.request import Client
from palm.serve.server import Server
from palm.testing._harness import Harness, ServiceThread, Transport, wait_until
from palm.testing.wire import RawPeer

__all__ = ["LocalServer"]

S = TypeVar("S", bound=Server)


class LocalServer(Harness, Generic[S]):
    """A standalone :class:`~palm.serve.server.Server` serving from a thread.

    ``server`` is a Server subclass (or a callable making one) called as
    ``server(name, address, redis_url=False, **options)`` on a fresh
    endpoint; the running instance is :attr:`server`. Use it as a context
    manager: on exit the clients and peers made here are closed and the
    server is stopped and its thread joined, even when the body failed.
    """

    def __init__(
        self,
        server: Callable[..., S],
        name: str = "server",
        *,
        transport: Transport = "inproc",
        timeout_s: float = 5.0,
        **options: Any,
    ) -> None:
        super().__init__(name, transport, timeout_s)
        self._factory = server
        self._options = options
        self._server: S | None = None
        self._address: str | None = None
        self._info: Client | None = None

    @property
    def server(self) -> S:
        """The server instance (its counters: ``handled``, ``failed``, ``malformed``...)."""
        if self._server is None:
            raise RuntimeError("the local server is not started")
        return self._server

    @property
    def address(self) -> str:
        """The endpoint the server is bound to."""
        if self._address is None:
            raise RuntimeError("the local server is not started")
        return self._address

    def start(self) -> LocalServer[S]:
        """Start the server; it is serving when this returns."""
        if self._server is not None:
            raise RuntimeError("the local server is started already")
        address = self.endpoint("server")
        options: dict[str, Any] = {"redis_url": False}
        options.update(self._options)
        server = self._factory(self.name, address, **options)
        ready = threading.Event()
        previous = server.on_ready

        def on_ready(s: Server) -> None:
            ready.set()
            if previous is not None:
                previous(s)

        server.on_ready = on_ready
        runner = ServiceThread(f"palm-testing-server-{self.name}", server.start, server.stop)
        self._server, self._address = server, address

        def stop() -> None:
            runner.stop(self.timeout_s)
            if runner.error is not None:
                raise RuntimeError(f"server {self.name} failed") from runner.error

        self._on_close("server", stop)
        runner.start()
        try:
            wait_until(
                lambda: ready.is_set() or not runner.alive,
                self.timeout_s,
                what=f"server {self.name} to bind",
            )
            if not ready.is_set():
                raise RuntimeError(f"server {self.name} did not start") from runner.error
        except BaseException:
            self.close()
            raise
        return self

    def __enter__(self) -> LocalServer[S]:
        return self.start()

    def client(self, **options: Any) -> Client:
        """A :class:`~palm.call.request.Client` of the server, closed on exit."""
        options.setdefault("timeout_s", self.timeout_s)
        client = Client(self.address, self.name, **options)
        self._on_close("client", self._close_socket_owner(client.close))
        return client

    def peer(self, **options: Any) -> RawPeer:
        """A :class:`~palm.testing.wire.RawPeer` to the server, for frames of any shape."""
        options.setdefault("timeout_s", min(self.timeout_s, 2.0))
        peer = RawPeer(self.address, **options)
        self._on_close("peer", self._close_socket_owner(peer.close))
        return peer

    def info(self) -> dict[str, object]:
        """The server's INFO answer: functions, handled, failed, malformed..."""
        if self._info is None:
            self._info = self.client()
        return self._info.info()
