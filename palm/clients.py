"""The client of the pipelined generation: ``Client(server_name, db_address)``.

It asks the server at ``db_address`` for the addresses it leaves out:
``pull_address`` (where the server takes jobs; the client sends there) and
``push_address`` (where results come out; the client receives there). For a
pipeline of servers, pass the last server's ``push_address``. See
:mod:`palm.call.chain` for ``job``, ``eval``, timeouts and probes.
"""

from __future__ import annotations

from typing import Any

import zmq

from palm.call.chain import Delivery, StreamClient
from palm.errors import ConfigError, ProtocolError, TimeoutError
from palm.serve.worker import _connectable, _host_of
from palm.wire.info import ServiceInfo
from palm.wire.messages import control
from palm.wire.protocol import Kind, decode
from palm.wire.sockets import check_endpoint, make_socket

__all__ = ["Client", "Delivery"]


class Client(StreamClient):
    """Send jobs to the server ``server_name`` and receive the results of its stream."""

    def __init__(
        self,
        server_name: str,
        db_address: str,
        push_address: str | None = None,
        pull_address: str | None = None,
        *,
        discover_timeout_s: float = 10.0,
        **options: Any,
    ) -> None:
        check_endpoint(db_address, "db_address")
        if push_address is None or pull_address is None:
            addresses = _discover(db_address, server_name, discover_timeout_s)
            host = _host_of(db_address)
            if pull_address is None:
                pull_address = _connectable(addresses["pull"], host)
            if push_address is None:
                push_address = _connectable(addresses["push"], host)
        super().__init__(push_address, pull_address, db_address, server_name, **options)


def _discover(db_address: str, server_name: str, timeout_s: float) -> dict[str, str]:
    """The bound addresses of the server answering at ``db_address``."""
    sock = make_socket(zmq.DEALER)
    sock.connect(db_address)
    try:
        sock.send_multipart(control(Kind.INFO, id=1))
        if not sock.poll(int(timeout_s * 1000), zmq.POLLIN):
            raise TimeoutError(f"no answer from server {server_name!r} at {db_address}")
        try:
            _, payloads = decode(sock.recv_multipart())
            info = ServiceInfo.from_wire(payloads[0])
            name, addresses = info.name, info.addresses
        except (ProtocolError, IndexError) as exc:
            raise ProtocolError(f"bad INFO answer from {db_address}") from exc
    finally:
        sock.close(0)
    if name != server_name:
        raise ConfigError(f"the server at {db_address} is {name!r}, not {server_name!r}")
    if "pull" not in addresses or "push" not in addresses:
        raise ConfigError(f"the server at {db_address} takes no jobs from clients")
    return {k: str(v) for k, v in addresses.items()}
