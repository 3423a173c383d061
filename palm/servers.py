"""Servers of the pipelined generation: standalone, parallel, pipelined, hubs and sinks.

Every server here sends its results out of a ROUTER at ``push_address``:
back to the client that sent the job (clients connect a DEALER and receive
only their own results), or, when the server is ``pipelined``, to the
servers downstream that subscribed to its stream by naming it as their
``previous`` (the stream waits until ``subscribers`` of them, default 1,
have subscribed, so none misses its start). Downstream servers connect to
the upstream's ``push_address`` (``upstream_address``); a :class:`Sink` joins
several upstream streams.

==============  ===========================  ================================
server          takes messages from          kind
==============  ===========================  ================================
:class:`Server` clients, at ``pull_address``  serial (one process)
:class:`Master` clients, at ``pull_address``  parallel (a pool of workers)
:class:`Pipeline` one upstream stream          serial
:class:`Hub`    one upstream stream           parallel
:class:`Sink`   several upstream streams      serial; knows when a pipeline ends
==============  ===========================  ================================

A function is named ``'server.function'``; a pipeline of servers takes a
route of several names, ``'source.split left.tag right.tag sink.collect'``,
and each server runs the entry naming it. ``handle_stream(message)``
returns where a result goes (a topic, or None for its client); masters and
hubs also have ``scatter(message)`` and ``gather(message)``.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Sequence
from typing import Any

from palm.errors import ConfigError
from palm.serve import master as _master
from palm.serve import server as _server
from palm.serve import worker as _worker
from palm.serve.stream import Message
from palm.wire.info import ServiceInfo
from palm.wire.protocol import Header

__all__ = ["Hub", "Master", "Message", "Pipeline", "Server", "Sink", "Worker"]


class Server(_server.Server):
    """A serial server: jobs in at ``pull_address``, results out at ``push_address``."""

    _palm_framework = True

    def __init__(
        self,
        name: str,
        db_address: str,
        pull_address: str,
        push_address: str,
        pipelined: bool = False,
        **options: Any,
    ) -> None:
        super().__init__(
            name,
            pull_address=pull_address,
            push_address=push_address,
            db_address=db_address,
            pipelined=pipelined,
            **options,
        )


class Pipeline(_server.Server):
    """A serial server fed by the stream of the server named ``previous``,
    whose ``push_address`` is ``upstream_address``. With ``to_client=False``
    it streams on to its own subscribers."""

    _palm_framework = True

    def __init__(
        self,
        name: str,
        db_address: str,
        upstream_address: str,
        push_address: str,
        previous: str,
        to_client: bool = True,
        **options: Any,
    ) -> None:
        super().__init__(
            name,
            upstreams=[(upstream_address, previous)],
            push_address=push_address,
            db_address=db_address,
            pipelined=not to_client,
            **options,
        )


class Sink(_server.Server):
    """A serial server joining several streams.

    ``upstream_addresses[i]`` is the ``push_address`` of the server named
    ``previous[i]``. A pipeline is complete when every one of those streams
    has passed on its end marker; then :meth:`complete` runs and a single end
    marker goes on (so the client's ``job()`` returns).
    """

    _palm_framework = True

    def __init__(
        self,
        name: str,
        db_address: str,
        upstream_addresses: Sequence[str],
        push_address: str,
        previous: Sequence[str],
        to_client: bool = True,
        **options: Any,
    ) -> None:
        if isinstance(previous, str) or len(previous) != len(upstream_addresses):
            raise ConfigError("a Sink needs one previous server name per upstream address")
        super().__init__(
            name,
            upstreams=list(zip(upstream_addresses, previous, strict=True)),
            push_address=push_address,
            db_address=db_address,
            pipelined=not to_client,
            **options,
        )
        self._ending: dict[bytes, dict[int, int]] = {}
        #: The latest completed pipelines: ``{'pipeline': hex, 'messages': n}``.
        self.completed: deque[dict[str, Any]] = deque(maxlen=1000)

    def complete(self, pipeline: bytes, messages: int) -> None:
        """Every stream has ended ``pipeline``, after ``messages`` messages in all.

        Override it to act on a complete pipeline; the default records it
        (INFO on the db endpoint lists the latest ones).
        """
        self.completed.append({"pipeline": pipeline.hex(), "messages": messages})
        self.logger.info(
            "%s: pipeline %s complete (%d messages)", self.name, pipeline.hex(), messages
        )

    def _on_end(self, header: Header, source: int) -> None:
        assert header.pipeline is not None
        ends = self._ending.setdefault(header.pipeline, {})
        count = (header.extra or {}).get("end", 0)
        ends[source] = count if isinstance(count, int) else 0
        if len(ends) < len(self.upstreams):
            return
        del self._ending[header.pipeline]
        self.complete(header.pipeline, sum(ends.values()))
        super()._on_end(header, source)

    def _info(self) -> ServiceInfo:
        info = super()._info()
        info.completed = list(self.completed)
        return info


class Master(_master.Master):
    """A parallel server: a master with a pool of :class:`Worker` processes."""

    def __init__(
        self,
        name: str,
        pull_address: str,
        push_address: str,
        worker_pull_address: str,
        worker_push_address: str,
        db_address: str,
        pipelined: bool = False,
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
            pipelined=pipelined,
            **options,
        )


class Hub(_master.Master):
    """A parallel server fed by the stream of the server named ``previous``."""

    def __init__(
        self,
        name: str,
        upstream_address: str,
        push_address: str,
        worker_pull_address: str,
        worker_push_address: str,
        db_address: str,
        previous: str,
        pipelined: bool = False,
        palm: bool = False,
        **options: Any,
    ) -> None:
        super().__init__(
            name,
            None,
            push_address,
            worker_pull_address,
            worker_push_address,
            db_address,
            palm,
            upstreams=[(upstream_address, previous)],
            pipelined=pipelined,
            **options,
        )


class Worker(_worker.Worker):
    """A worker of a :class:`Master` or :class:`Hub`; ``db_address`` alone is enough."""

    _palm_framework = True

    def __init__(
        self,
        name: str,
        db_address: str,
        push_address: str | None = None,
        pull_address: str | None = None,
        **options: Any,
    ) -> None:
        super().__init__(
            name,
            push_address=push_address,
            pull_address=pull_address,
            db_address=db_address,
            **options,
        )
