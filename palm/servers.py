"""Servers of the pipelined generation: standalone, parallel, pipelined, hubs and sinks.

The signatures are pylm 0.14's, keyword for keyword and in the same order,
so a pylm program runs with ``pylm`` renamed ``palm`` in its imports:
``pub_address`` is where a server's results leave (palm's ``push_address``,
a ROUTER), ``sub_address`` the upstream's ``pub_address`` a Pipeline or Hub
takes its messages from (palm's ``upstream_address``). Either spelling is
accepted; two spellings of one address that disagree are a ConfigError.

Every server here sends its results out of that ROUTER: back to the client
that sent the job (clients connect a DEALER and receive only their own
results), or, when the server is ``pipelined``, to the servers downstream
that subscribed to its stream by naming it as their ``previous`` (the
stream waits until ``subscribers`` of them, default 1, have subscribed, so
none misses its start). A :class:`Sink` joins several upstream streams.

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
route of several names, ``'source.split left.tag right.tag sink.collect'``
(or a list of them), and each server runs the entry naming it.
``handle_stream(message)`` returns where a result goes (a topic, None for
its client, or ``(topic, message)``); masters and hubs also have
``scatter(message)`` and ``gather(message)`` generators, and every server
``change_payload(message, new_payload)``. A hook that raises or returns
something unusable fails that message only (its client gets the error).

As in pylm: ``log_level`` sets the server's log level (with no logging
configured it logs to stdout with a timestamp); ``messages=n`` stops a
Server, Pipeline, Sink or Worker after ``n`` messages; a Pipeline or Sink
function returning ``None`` delivers nothing (elsewhere ``None`` is a
:class:`~palm.errors.BadResult`); a :class:`MuxWorker`'s functions are
generators, each value one result.
"""

from __future__ import annotations

import logging
import sys
import threading
import time
import uuid
from collections import deque
from collections.abc import Sequence
from typing import Any

from palm.errors import ConfigError
from palm.serve import master as _master
from palm.serve import server as _server
from palm.serve import worker as _worker
from palm.serve.compat import DropsNone, MessageLimit, message_limit, one_of, setup_logging
from palm.serve.service import error_info
from palm.serve.stream import Message
from palm.serve.views import as_call_payloads
from palm.wire.info import ServiceInfo
from palm.wire.protocol import ErrorInfo, Header
from palm.wire.shipping import MAP_FUNCTION

__all__ = ["Hub", "Master", "Message", "MuxWorker", "Pipeline", "Server", "Sink", "Worker"]


#: How long a server that reached ``messages`` waits for its last results to go out.
STOP_GRACE_S = 10.0


def _required(server: str, name: str, value: str | None) -> str:
    if not value:
        raise ConfigError(f"{server!r} needs {name}")
    return value


class _Limited(_server.Server):
    """A serial server with pylm's ``log_level``, ``messages`` and ``start(cache_messages)``."""

    _palm_framework = True

    def _pylm_setup(self, log_level: int | str, messages: int | None) -> None:
        setup_logging(self.logger, log_level)
        self.messages = message_limit(messages)
        self._limit = MessageLimit(self.messages, self._stop_when_sent)

    def _stop_when_sent(self) -> None:
        """Stop once the results in hand have gone out (a client that has not
        said HELLO yet gets them when it does), or after a grace period."""

        def wait() -> None:
            deadline = time.monotonic() + STOP_GRACE_S
            while self.routes.waiting and time.monotonic() < deadline:
                time.sleep(0.05)
            self.stop()

        threading.Thread(target=wait, name=f"{self.name}-limit", daemon=True).start()

    def start(self, cache_messages: int = sys.maxsize) -> None:
        """Serve until stopped (or ``messages`` were handled). ``cache_messages``
        is accepted for pylm's sake: palm's cache endpoint lives as long as the server."""
        super().start()

    def _run(self, header: Header, payloads: list[bytes]) -> tuple[list[bytes], list[ErrorInfo]]:
        out = super()._run(header, payloads)
        self._limit.count(len(payloads))
        return out


class Server(_Limited):
    """A serial server: jobs in at ``pull_address``, results out at ``pub_address``."""

    _palm_framework = True

    def __init__(
        self,
        name: str,
        db_address: str,
        pull_address: str,
        pub_address: str | None = None,
        pipelined: bool = False,
        log_level: int | str = logging.INFO,
        messages: int = sys.maxsize,
        *,
        push_address: str | None = None,
        **options: Any,
    ) -> None:
        super().__init__(
            name,
            pull_address=pull_address,
            push_address=one_of(name, "pub_address", pub_address, "push_address", push_address),
            db_address=db_address,
            pipelined=pipelined,
            **options,
        )
        self._pylm_setup(log_level, messages)


class Pipeline(DropsNone, _Limited):
    """A serial server fed by the stream of the server named ``previous``, whose
    ``pub_address`` is ``sub_address``. With ``to_client=False`` it streams on to
    its own subscribers. A function returning None sends nothing on."""

    _palm_framework = True

    def __init__(
        self,
        name: str,
        db_address: str,
        sub_address: str | None = None,
        pub_address: str | None = None,
        previous: str | None = None,
        to_client: bool = True,
        log_level: int | str = logging.INFO,
        messages: int = sys.maxsize,
        *,
        upstream_address: str | None = None,
        push_address: str | None = None,
        **options: Any,
    ) -> None:
        if not previous or not isinstance(previous, str):
            raise ConfigError(f"pipeline {name!r} needs previous, the name of its upstream server")
        upstream = one_of(name, "sub_address", sub_address, "upstream_address", upstream_address)
        super().__init__(
            name,
            upstreams=[(upstream, previous)],
            push_address=one_of(name, "pub_address", pub_address, "push_address", push_address),
            db_address=db_address,
            pipelined=not to_client,
            **options,
        )
        self._pylm_setup(log_level, messages)


class Sink(DropsNone, _Limited):
    """A serial server joining several streams.

    ``sub_addresses[i]`` is the ``pub_address`` of the server named
    ``previous[i]``. A pipeline is complete when every one of those streams
    has passed on its end marker; then :meth:`complete` runs and a single end
    marker goes on (so the client's ``job()`` returns). A function returning
    None sends nothing on.
    """

    _palm_framework = True

    def __init__(
        self,
        name: str,
        db_address: str,
        sub_addresses: Sequence[str] | None = None,
        pub_address: str | None = None,
        previous: Sequence[str] | None = None,
        to_client: bool = True,
        log_level: int | str = logging.INFO,
        messages: int = sys.maxsize,
        *,
        upstream_addresses: Sequence[str] | None = None,
        push_address: str | None = None,
        **options: Any,
    ) -> None:
        upstreams = one_of(
            name, "sub_addresses", sub_addresses, "upstream_addresses", upstream_addresses
        )
        if (
            previous is None
            or isinstance(previous, str)
            or isinstance(upstreams, str)
            or len(previous) != len(upstreams)
        ):
            raise ConfigError("a Sink needs one previous server name per sub address")
        super().__init__(
            name,
            upstreams=list(zip(upstreams, previous, strict=True)),
            push_address=one_of(name, "pub_address", pub_address, "push_address", push_address),
            db_address=db_address,
            pipelined=not to_client,
            **options,
        )
        self._pylm_setup(log_level, messages)
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


class _PylmMaster(_master.Master):
    """A master with pylm's ``log_level`` and ``start(cache_messages)``."""

    def _pylm_setup(self, log_level: int | str, background: bool) -> None:
        setup_logging(self.logger, log_level)
        if background:
            self.start_background()

    def start(self, cache_messages: int = sys.maxsize) -> None:
        """Serve until stopped; ``cache_messages`` is accepted for pylm's sake."""
        super().start()


class Master(_PylmMaster):
    """A parallel server: a master with a pool of :class:`Worker` processes.

    ``cache`` is the key-value store the cache calls use (a
    :class:`palm.state.cache.Cache`: ``set(value, key=None)``, ``get``,
    ``delete``; default: palm's, in Redis when the deployment has one).
    ``palm=True`` serves at once, from a thread (see :class:`palm.serve.master.Master`).
    """

    def __init__(
        self,
        name: str,
        pull_address: str,
        pub_address: str | None = None,
        worker_pull_address: str | None = None,
        worker_push_address: str | None = None,
        db_address: str | None = None,
        pipelined: bool = False,
        cache: Any = None,
        log_level: int | str = logging.INFO,
        *,
        push_address: str | None = None,
        palm: bool = False,
        **options: Any,
    ) -> None:
        super().__init__(
            name,
            pull_address,
            one_of(name, "pub_address", pub_address, "push_address", push_address),
            _required(name, "worker_pull_address", worker_pull_address),
            _required(name, "worker_push_address", worker_push_address),
            db_address,
            pipelined=pipelined,
            cache=cache,
            **options,
        )
        self._pylm_setup(log_level, palm)


class Hub(_PylmMaster):
    """A parallel server fed by the stream of the server named ``previous``,
    whose ``pub_address`` is ``sub_address``."""

    def __init__(
        self,
        name: str,
        sub_address: str | None = None,
        pub_address: str | None = None,
        worker_pull_address: str | None = None,
        worker_push_address: str | None = None,
        db_address: str | None = None,
        previous: str | None = None,
        pipelined: bool = False,
        cache: Any = None,
        log_level: int | str = logging.INFO,
        *,
        upstream_address: str | None = None,
        push_address: str | None = None,
        palm: bool = False,
        **options: Any,
    ) -> None:
        if not previous or not isinstance(previous, str):
            raise ConfigError(f"hub {name!r} needs previous, the name of its upstream server")
        upstream = one_of(name, "sub_address", sub_address, "upstream_address", upstream_address)
        super().__init__(
            name,
            None,
            one_of(name, "pub_address", pub_address, "push_address", push_address),
            _required(name, "worker_pull_address", worker_pull_address),
            _required(name, "worker_push_address", worker_push_address),
            db_address,
            upstreams=[(upstream, previous)],
            pipelined=pipelined,
            cache=cache,
            **options,
        )
        self._pylm_setup(log_level, palm)


class Worker(_worker.Worker):
    """A worker of a :class:`Master` or :class:`Hub`; ``db_address`` alone is enough.

    ``push_address`` is the master's ``worker_push_address`` (jobs come from
    there), ``pull_address`` its ``worker_pull_address`` (results go there).
    """

    _palm_framework = True

    def __init__(
        self,
        name: str = "",
        db_address: str = "",
        push_address: str | None = None,
        pull_address: str | None = None,
        log_level: int | str = logging.INFO,
        messages: int = sys.maxsize,
        **options: Any,
    ) -> None:
        super().__init__(
            name or f"worker-{uuid.uuid4().hex[:8]}",
            push_address=push_address,
            pull_address=pull_address,
            db_address=db_address or None,
            **options,
        )
        setup_logging(self.logger, log_level)
        self.messages = message_limit(messages)
        self._limit = MessageLimit(self.messages, self.stop)

    def run_job(self, header: Header, payloads: list[bytes]) -> tuple[Header, list[bytes]]:
        out = super().run_job(header, payloads)
        self._limit.count(len(payloads))
        return out


class MuxWorker(Worker):
    """A worker whose functions are generators: each value yielded is one result.

    One job may so answer with any number of results; the client counts them
    with ``messages=``. A function that returns bytes instead answers one.
    """

    _palm_framework = True

    def run_job(self, header: Header, payloads: list[bytes]) -> tuple[Header, list[bytes]]:
        func = self.resolve(header.function)
        if func is None or header.function.rpartition(".")[2] == MAP_FUNCTION:
            return super().run_job(header, payloads)
        reply = header.reply()
        reply.extra = dict(header.extra or {}, w=self.identity, mux=len(payloads))
        reply.packed = 0
        out: list[bytes] = []
        errors: list[ErrorInfo] = []
        passed = {e.offset: e for e in header.errors} if header.errors else {}
        for offset, payload in enumerate(as_call_payloads(func, payloads)[0]):
            if offset in passed:
                passed[offset].offset = len(out)
                errors.append(passed[offset])
                out.append(b"")
                continue
            try:
                produced = func(payload)
                values = [produced] if isinstance(produced, bytes) else list(produced)
                for value in values:
                    if not isinstance(value, bytes | bytearray | memoryview):
                        raise TypeError(f"yielded a {type(value).__name__}, not bytes")
                    out.append(bytes(value))
            except Exception as exc:
                self.logger.exception("%s.%s raised", self.name, header.function)
                errors.append(error_info(exc, len(out), self.name, header.stage))
                out.append(b"")
        reply.errors = errors or None
        self._limit.count(len(payloads))
        return reply, out
