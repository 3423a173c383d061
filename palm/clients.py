"""The client of the pipelined generation, with pylm 0.14's signature.

``Client(server_name, db_address, push_address=None, sub_address=None,
session=None, logging_level=logging.INFO, this_config=False)``, as in pylm:
``push_address`` is the server's input (its ``pull_address``: jobs are
pushed there) and ``sub_address`` the endpoint results come from (the
``pub_address`` of the server, or of the last stage of a pipeline). The
client asks the server at ``db_address`` for what it leaves out and checks
that ``push_address`` really is that server's input (and that a pipelined
server, whose results go on to the next stage, comes with a ``sub_address``),
so a call with the addresses the wrong way round fails at once with a
ConfigError instead of waiting. palm's own spellings are ``pull_address`` (the input) and
``results_address`` (where results come from); one address given in both
spellings must agree. With ``this_config=True`` the client takes the
addresses it is given and asks nothing.

``job(function, generator, cache=None, messages=None)`` and
``eval(function, payload, messages=1, cache='')`` take pylm's arguments; a
function may be a list of stages (``['source.f', 'next.g']``), joined into a
route. See :mod:`palm.call.chain` for timeouts, probes and deliveries.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Iterable, Iterator, Sequence
from typing import Any
from urllib.parse import urlsplit

from palm.call.base import DEFAULT, Timeout
from palm.call.chain import Delivery, StreamClient
from palm.errors import ConfigError, RemoteError, TimeoutError
from palm.serve.worker import _connectable, _host_of
from palm.wire.discovery import server_info
from palm.wire.sockets import check_endpoint

__all__ = ["Client", "Delivery", "server_info"]

Function = str | Sequence[str]


class Client(StreamClient):
    """Send jobs to the server ``server_name`` and receive the results of its stream."""

    def __init__(
        self,
        server_name: str,
        db_address: str,
        push_address: str | None = None,
        sub_address: str | None = None,
        session: str | None = None,
        logging_level: int | str = logging.INFO,
        this_config: bool = False,
        *,
        pull_address: str | None = None,
        results_address: str | None = None,
        discover_timeout_s: float = 10.0,
        **options: Any,
    ) -> None:
        check_endpoint(db_address, "db_address")
        inbox = _same(
            "push_address (pylm's name: the server's input)",
            push_address,
            "pull_address (palm's name for it)",
            pull_address,
        )
        results = _same(
            "sub_address (pylm's name: where results come from)",
            sub_address,
            "results_address (palm's name for it)",
            results_address,
        )
        if not this_config:
            addresses = _discover(db_address, server_name, discover_timeout_s)
            host = _host_of(db_address)
            server_input = _connectable(addresses["pull"], host)
            if inbox is None:
                inbox = server_input
            elif _port_of(inbox) != _port_of(server_input):
                raise ConfigError(
                    f"push_address {inbox} is not the input of server {server_name!r} "
                    f"(its pull_address is {server_input}): in pylm's words push_address is "
                    "where jobs go and sub_address where results come from (palm's names: "
                    "pull_address and results_address)"
                )
            if results is None:
                if addresses.get("pipelined") == "True":
                    raise ConfigError(
                        f"server {server_name!r} is pipelined: its results go on to the next "
                        "stage, not to clients; give sub_address, the pub_address of the "
                        "stage results come from (palm's name: results_address)"
                    )
                results = _connectable(addresses["push"], host)
        if inbox is None or results is None:
            raise ConfigError(
                "with this_config=True give push_address (the server's input) and "
                "sub_address (where results come from)"
            )
        logger = logging.getLogger(f"palm.client.{server_name}")
        logger.setLevel(logging_level)
        #: pylm's session: accepted; palm keys cache entries as they are given.
        self.session_name = session
        super().__init__(results, inbox, db_address, server_name, **options)

    def job(  # type: ignore[override]
        self,
        function: Function,
        generator: Iterable[bytes],
        cache: str | None = None,
        messages: int | None = None,
        *,
        errors: str = "raise",
        timeout_s: Timeout = DEFAULT,
    ) -> Iterator[bytes | RemoteError]:
        """Send every payload to ``function`` (a name, a route, or a list of
        stages); yield results as they arrive, ``messages`` of them if given,
        else until the server says the job is over."""
        return super().job(
            route(function),
            generator,
            _count(messages),
            cache=cache or None,
            errors=errors,
            timeout_s=timeout_s,
        )

    def eval(
        self,
        function: Function,
        payload: bytes,
        messages: int = 1,
        cache: str | None = "",
    ) -> Any:
        """Run ``function`` on one payload: its result, or a list of ``messages``
        results when more than one is asked for."""
        if isinstance(messages, bool) or not isinstance(messages, int) or messages < 1:
            raise ConfigError(f"messages must be 1 or more, got {messages!r}")
        results = list(self.job(function, [payload], cache, messages))
        if len(results) < messages:
            raise TimeoutError(
                f"the job ended after {len(results)} of the {messages} result(s) asked for"
            )
        return results[0] if messages == 1 else results

    def deliveries(
        self,
        function: Function,
        iterable: Iterable[bytes],
        messages: int | None = None,
        *,
        cache: str | None = None,
        pipeline: bytes | None = None,
        timeout_s: Timeout = DEFAULT,
    ) -> Iterator[Delivery]:
        """Like :meth:`job`, yielding a :class:`Delivery` (payload, error, stage...) each."""
        return super().deliveries(
            route(function),
            iterable,
            _count(messages),
            cache=cache,
            pipeline=pipeline,
            timeout_s=timeout_s,
        )


def route(function: Function) -> str:
    """A function name or a route, from a list of stages as pylm took them."""
    if isinstance(function, str):
        return function
    parts = list(function)
    if not parts or not all(isinstance(p, str) and p and " " not in p for p in parts):
        raise ConfigError(f"a route is a list of 'server.function' names, got {function!r}")
    return " ".join(parts)


def _count(messages: int | None) -> int | None:
    """pylm's ``messages=sys.maxsize`` meant: until the end."""
    return None if messages is None or messages >= sys.maxsize else messages


def _same(pylm_name: str, pylm_value: str | None, palm_name: str, palm_value: str | None) -> Any:
    if pylm_value is not None and palm_value is not None and pylm_value != palm_value:
        raise ConfigError(
            f"{pylm_name} is {pylm_value} and {palm_name} is {palm_value}: they are the same "
            "address; give one"
        )
    return pylm_value if pylm_value is not None else palm_value


def _port_of(endpoint: str) -> str:
    """What tells two spellings of an endpoint apart: the port (tcp), else the endpoint."""
    parts = urlsplit(endpoint)
    if parts.scheme == "tcp":
        return endpoint.rpartition(":")[2]
    return endpoint


def _discover(db_address: str, server_name: str, timeout_s: float) -> dict[str, str]:
    """The bound addresses of the server answering at ``db_address``."""
    info = server_info(db_address, timeout_s, server_name)
    name, addresses = info.name, info.addresses
    if name != server_name:
        raise ConfigError(f"the server at {db_address} is {name!r}, not {server_name!r}")
    if "pull" not in addresses or "push" not in addresses:
        raise ConfigError(f"the server at {db_address} takes no jobs from clients")
    found = {k: str(v) for k, v in addresses.items()}
    found["pipelined"] = str(bool(info.pipelined))
    return found
