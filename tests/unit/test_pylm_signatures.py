"""palm.servers and palm.clients take pylm 0.14's parameters, in pylm's order,
and refuse two spellings of one address that disagree."""

from __future__ import annotations

import inspect
import logging
import sys

import pytest

from palm import clients, servers
from palm.errors import ConfigError

#: pylm 0.14's parameters, in order, with their defaults (None: no default).
PYLM = {
    servers.Server: [
        ("name", None),
        ("db_address", None),
        ("pull_address", None),
        ("pub_address", None),
        ("pipelined", False),
        ("log_level", logging.INFO),
        ("messages", sys.maxsize),
    ],
    servers.Master: [
        ("name", None),
        ("pull_address", None),
        ("pub_address", None),
        ("worker_pull_address", None),
        ("worker_push_address", None),
        ("db_address", None),
        ("pipelined", False),
        ("cache", None),
        ("log_level", logging.INFO),
    ],
    servers.Pipeline: [
        ("name", None),
        ("db_address", None),
        ("sub_address", None),
        ("pub_address", None),
        ("previous", None),
        ("to_client", True),
        ("log_level", logging.INFO),
        ("messages", sys.maxsize),
    ],
    servers.Hub: [
        ("name", None),
        ("sub_address", None),
        ("pub_address", None),
        ("worker_pull_address", None),
        ("worker_push_address", None),
        ("db_address", None),
        ("previous", None),
        ("pipelined", False),
        ("cache", None),
        ("log_level", logging.INFO),
    ],
    servers.Sink: [
        ("name", None),
        ("db_address", None),
        ("sub_addresses", None),
        ("pub_address", None),
        ("previous", None),
        ("to_client", True),
        ("log_level", logging.INFO),
        ("messages", sys.maxsize),
    ],
    servers.Worker: [
        ("name", ""),
        ("db_address", ""),
        ("push_address", None),
        ("pull_address", None),
        ("log_level", logging.INFO),
        ("messages", sys.maxsize),
    ],
    clients.Client: [
        ("server_name", None),
        ("db_address", None),
        ("push_address", None),
        ("sub_address", None),
        ("session", None),
        ("logging_level", logging.INFO),
        ("this_config", False),
    ],
}


@pytest.mark.parametrize("cls", list(PYLM), ids=lambda c: c.__name__)
def test_the_positional_parameters_are_pylms_in_pylms_order(cls: type) -> None:
    params = [
        p
        for p in inspect.signature(cls.__init__).parameters.values()
        if p.kind is p.POSITIONAL_OR_KEYWORD and p.name != "self"
    ]
    assert [p.name for p in params] == [name for name, _ in PYLM[cls]]
    for param, (name, default) in zip(params, PYLM[cls], strict=True):
        if default is not None:
            assert param.default == default, name


def test_two_spellings_of_one_address_that_disagree_are_refused_naming_both() -> None:
    with pytest.raises(ConfigError, match=r"pub_address.*push_address"):
        servers.Server(
            "s",
            "tcp://127.0.0.1:1",
            "tcp://127.0.0.1:2",
            "tcp://127.0.0.1:3",
            push_address="tcp://127.0.0.1:4",
        )
    with pytest.raises(ConfigError, match=r"sub_address.*upstream_address"):
        servers.Pipeline(
            "p",
            "tcp://127.0.0.1:1",
            "tcp://127.0.0.1:2",
            "tcp://127.0.0.1:3",
            "s",
            upstream_address="tcp://127.0.0.1:5",
        )
    with pytest.raises(ConfigError, match=r"push_address.*pull_address"):
        clients.Client(
            "s", "tcp://127.0.0.1:1", "tcp://127.0.0.1:2", pull_address="tcp://127.0.0.1:3"
        )
    with pytest.raises(ConfigError, match=r"sub_address.*results_address"):
        clients.Client(
            "s",
            "tcp://127.0.0.1:1",
            sub_address="tcp://127.0.0.1:2",
            results_address="tcp://127.0.0.1:3",
        )


def test_a_route_given_as_a_list_is_joined_and_a_bad_one_refused() -> None:
    assert clients.route(["server.f", "pipeline.g"]) == "server.f pipeline.g"
    assert clients.route("server.f") == "server.f"
    with pytest.raises(ConfigError):
        clients.route(["server.f", ""])


def test_a_server_needs_previous_and_messages_must_be_a_count() -> None:
    with pytest.raises(ConfigError, match="previous"):
        servers.Pipeline("p", "tcp://127.0.0.1:1", "tcp://127.0.0.1:2", "tcp://127.0.0.1:3")
    with pytest.raises(ConfigError, match="messages"):
        servers.Server(
            "s", "tcp://127.0.0.1:1", "tcp://127.0.0.1:2", "tcp://127.0.0.1:3", messages=0
        )
