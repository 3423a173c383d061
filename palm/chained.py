"""The chained topology: servers in a row, the client feeding the first and
hearing from the last.

::

    client --PUSH--> step1 (Server) --PUSH--> step2 (Server) --PUSH--> last (LastServer)
       ^                                                                   |
       +--------------------------- DEALER <-- ROUTER (push_address) ------+

Each :class:`Server` runs the function a message names, then sends the
results to ``next_address`` (the next server's ``pull_address``) calling
``next_call`` there; :class:`LastServer` has no next call and returns the
results to the client they belong to. Any stage may be parallel: a
:class:`Master` stage hands its jobs to a pool of workers and sends their
results on. Every message keeps its client id, job ids and pipeline id, and
its ``stage`` grows by one per server, so errors name the stage where they
happened. Errors pass the later stages untouched and reach the client as
:class:`~palm.errors.RemoteError`.

A chain from the presentation::

    class Step1(Server):
        def foo(self, message):
            return b'you sent me ' + message

    Step1(name='step1', pull_address='tcp://127.0.0.1:5555',
          next_address='tcp://127.0.0.1:5557', next_call='step2.bar',
          db_address='tcp://127.0.0.1:5556').start()

    client = LoopClient(push_address='tcp://127.0.0.1:5561',
                        pull_address='tcp://127.0.0.1:5555',
                        db_address='tcp://127.0.0.1:5556', server_name='step1')
    for result in client.job('foo', [b'a message'], messages=1):
        print(result)
"""

from __future__ import annotations

from typing import Any

from palm.call.chain import Delivery, StreamClient
from palm.serve import master as _master
from palm.serve import server as _server
from palm.serve.stream import Message
from palm.serve.worker import Worker

__all__ = ["Delivery", "LastServer", "LoopClient", "Master", "Message", "Server", "Worker"]


class Server(_server.Server):
    """A stage of a chain: runs its functions, then calls ``next_call`` at ``next_address``."""

    _palm_framework = True

    def __init__(
        self,
        name: str,
        pull_address: str,
        next_address: str,
        next_call: str,
        db_address: str | None = None,
        **options: Any,
    ) -> None:
        super().__init__(
            name,
            pull_address=pull_address,
            next_address=next_address,
            next_call=next_call,
            db_address=db_address,
            **options,
        )


class LastServer(_server.Server):
    """The end of a chain: runs its functions and returns results to their clients
    through a ROUTER at ``push_address``."""

    _palm_framework = True

    def __init__(
        self,
        name: str,
        pull_address: str,
        push_address: str,
        db_address: str | None = None,
        **options: Any,
    ) -> None:
        super().__init__(
            name,
            pull_address=pull_address,
            push_address=push_address,
            db_address=db_address,
            **options,
        )


class Master(_master.Master):
    """A parallel stage of a chain: a master with its own workers.

    With ``next_address`` and ``next_call`` it sends results to the next
    stage; with ``push_address`` instead it is the last stage and returns
    them to their clients. Override ``scatter``/``gather`` to reshape the
    stream.
    """

    def __init__(
        self,
        name: str,
        pull_address: str,
        worker_pull_address: str,
        worker_push_address: str,
        db_address: str | None = None,
        next_address: str | None = None,
        next_call: str | None = None,
        push_address: str | None = None,
        palm: bool = False,
        **options: Any,
    ) -> None:
        super().__init__(
            name,
            pull_address,
            push_address,
            worker_pull_address,
            worker_push_address,
            db_address,
            palm,
            next_address=next_address,
            next_call=next_call,
            **options,
        )


class LoopClient(StreamClient):
    """The client of a chain: ``push_address`` is the last server's, ``pull_address``
    the first server's, ``server_name`` the first server's name."""
