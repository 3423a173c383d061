"""The parts every stage of a chain or pipeline shares.

A stage takes palm messages in, runs one function on each payload and sends
the results on: to the next stage, to the stages that subscribed to its
stream, or back to the client. A message keeps its client id, job ids and
pipeline id end to end; each stage adds one to ``header.stage`` as it takes
a message in, so an error names the stage where it happened and a result
arrives with the number of stages it went through.

Besides jobs, two control messages travel down a stream:

* ``PING`` is a probe. Each stage reports to the client's receiving endpoint
  (the ROUTER of the last stage, named in ``extra['reply']``) with a
  ``HEARTBEAT`` carrying ``extra['probe']``, then passes the probe on. The
  last stage relays reports to the client by its id. A client that waits too
  long learns which stage stopped answering.
* ``BYE`` with a pipeline id is an end marker: the client has sent every
  message of that pipeline. A stage passes it on once every message of the
  pipeline that came in before it has gone out, with ``extra['end']`` set to
  how many messages it sent on, so the last stage (or a :class:`Sink`
  joining several streams) knows when a pipeline is complete.

Routing strings are ``'server.function'``; a route of several entries
separated by spaces (``'step1.foo step2.bar last.baz'``) lets each server
pick the entry that names it.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import socket
from collections import OrderedDict
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Final

import zmq

from palm.serve.auth import Refusals
from palm.serve.db_endpoint import DEFAULT_CACHE_QUEUE, DEFAULT_CACHE_TIMEOUT_S, DbEndpoint
from palm.serve.loop import Poller, Sockets
from palm.serve.outlets import Outbox, Outlet, Reporter
from palm.serve.service import error_info, split_function
from palm.state.cache import Cache
from palm.wire.info import ServiceInfo
from palm.wire.protocol import ErrorInfo, Header, Kind, MalformedCounter

__all__ = [
    "NEXT",
    "Message",
    "StreamOut",
    "StreamRouting",
    "function_for",
    "hook_failed",
    "probe_report",
]

log = logging.getLogger(__name__)


@dataclass(slots=True)
class Message:
    """One payload as the stream hooks (``scatter``, ``gather``, ``handle_stream``) see it.

    A hook may change any field; ``error`` is set when an earlier stage (or
    this one) failed on this payload, and then ``payload`` is empty.
    """

    payload: bytes
    function: str
    client: bytes
    id: int
    stage: int
    pipeline: bytes | None = None
    cache: str | None = None
    error: ErrorInfo | None = None
    extra: dict[str, Any] | None = None

    def header(self, kind: int) -> Header:
        errors = None
        if self.error is not None:
            self.error.offset = 0
            errors = [self.error]
        return Header(
            kind,
            self.id,
            self.client,
            self.function,
            self.stage,
            self.pipeline,
            self.cache,
            errors,
            self.extra,
        )


def explode(header: Header, payloads: list[bytes]) -> list[Message]:
    """One :class:`Message` per payload of a (batch) message."""
    errors = {e.offset: e for e in header.errors or ()}
    return [
        Message(
            payload,
            header.function,
            header.client,
            header.id + offset,
            header.stage,
            header.pipeline,
            header.key,
            errors.get(offset),
            dict(header.extra) if header.extra else None,
        )
        for offset, payload in enumerate(payloads)
    ]


def function_for(function: str, server: str) -> str:
    """The entry of a routing string that ``server`` runs.

    ``'foo'`` and ``'server.foo'`` stand for themselves; in a route of
    several entries the first one naming ``server`` wins, and ``''`` means
    the route does not name it.
    """
    if " " not in function:
        return function
    for entry in function.split():
        if split_function(entry)[0] == server:
            return entry
    return ""


def hook_failed(server: Any, hook: str, message: Message, exc: BaseException) -> Message:
    """``message`` failed in ``server``'s ``hook``: logged, and the message as an error
    its client will receive."""
    server.logger.error(
        "%s: the %s hook failed on a message of %s: %s: %s",
        server.name,
        hook,
        message.function,
        type(exc).__name__,
        exc,
        exc_info=exc,
    )
    info = error_info(exc, 0, server.name, message.stage)
    info.type = "palm.BadResult"
    info.message = f"{hook} failed: {type(exc).__name__}: {exc}"
    return dataclasses.replace(message, payload=b"", error=info)


def probe_report(header: Header, server: str, **details: Any) -> list[bytes]:
    """What a stage answers a probe with: a HEARTBEAT for the probing client."""
    report = Header(
        Kind.HEARTBEAT,
        header.id,
        header.client,
        header.function,
        header.stage,
        header.pipeline,
        extra={"probe": True, "server": server, **details},
    )
    return [report.to_wire()]


#: The route to the next stage of a chain (``next_address``).
NEXT: Final = "\x00next"


class StreamOut:
    """Where a server's messages go once it is done with them.

    Composed into every chained or pipelined server and every master: results
    go to the next stage (``next_address``, through an :class:`Outbox`
    calling ``next_call``), to the subscribers of a topic or to a client
    (through the :class:`Outlet` at ``push_address``). It also passes probes
    and end markers on, counting per pipeline what went out before an end.
    """

    def __init__(
        self,
        name: str,
        next_address: str | None,
        next_call: str | None,
        pipelined: bool,
        bound: dict[str, str],
    ) -> None:
        self.name = name
        self.next_address = next_address
        self.next_call = next_call
        self.pipelined = pipelined
        self.bound = bound
        self.outlet: Outlet | None = None
        self.outbox: Outbox | None = None
        self.reporter = Reporter()
        self.ends = EndTracker()
        #: Closed with the routes (the db endpoint's cache threads).
        self.db: DbEndpoint | None = None
        #: Jobs sent on (results to clients, messages to the next stage or a topic).
        self.sent = 0

    def open(
        self,
        sockets: Sockets,
        poller: Poller,
        push_address: str | None,
        session: str,
        logger: logging.Logger,
        malformed: MalformedCounter,
        **outlet_options: Any,
    ) -> None:
        """Bind the outlet at ``push_address`` (when there is one, read by ``poller``)
        and connect to the next stage (when there is one)."""
        self.reporter.security = sockets.security
        if push_address is not None:
            sock = sockets.bind(zmq.ROUTER, push_address, "push", max_message_bytes=None)
            self.outlet = Outlet(sock, self.name, session, logger, malformed, **outlet_options)
            poller.add(sock, self.outlet.on_message)
        if self.next_address is not None:
            self.outbox = Outbox(sockets.connect(zmq.PUSH, self.next_address))
            self.bound["next"] = self.next_address

    def route(self, header: Header) -> str | bytes:
        """Where a whole message goes by default: NEXT, a topic, or a client id."""
        if self.next_address is not None:
            return NEXT
        if self.pipelined:
            return self.name
        return header.client

    def next_desc(self) -> str:
        """What this server passes its results to, for probe reports."""
        if self.next_address is not None:
            return f"{self.next_call} at {self.next_address}"
        if self.pipelined and self.outlet is not None:
            subscribers = len(self.outlet.subscribers.get(self.name, []))
            return f"the {subscribers} subscriber(s) of {self.name!r} at {self.bound.get('push')}"
        return "the client"

    def emit(self, target: str | bytes, header: Header, payloads: list[bytes]) -> None:
        """Send one message to the next stage, a topic's subscribers or a client."""
        self.ends.count(header.pipeline, len(payloads))
        self.sent += len(payloads)
        if target == NEXT:
            assert self.outbox is not None and self.next_call is not None
            header.kind = Kind.JOB
            if " " not in header.function:
                header.function = self.next_call
            self.outbox.send([header.to_wire(), *payloads])
            return
        assert self.outlet is not None, f"{self.name} has no push_address to send to"
        if isinstance(target, bytes):
            header.kind = Kind.RESULT
            self.outlet.to_client(target, [header.to_wire(), *payloads])
        else:
            header.kind = Kind.JOB
            self.outlet.to_topic(target, [header.to_wire(), *payloads])

    def control(self, header: Header, target: str | bytes | None = None) -> None:
        """Pass a probe or an end marker on, the way results go."""
        if target is None:
            target = self.route(header)
        frames = [header.to_wire()]
        if target == NEXT:
            assert self.outbox is not None
            self.outbox.send(frames)
        elif self.outlet is not None:
            if isinstance(target, bytes):
                self.outlet.to_client(target, frames)
            else:
                self.outlet.to_topic(target, frames)

    def probe(self, header: Header, **details: Any) -> None:
        """Report to the probing client, then pass the probe on."""
        target = self.route(header)
        report = probe_report(
            header,
            self.name,
            last=isinstance(target, bytes),
            next=self.next_desc(),
            waiting=len(self.outbox) if self.outbox is not None else 0,
            **details,
        )
        if isinstance(target, bytes):
            assert self.outlet is not None
            self.outlet.to_client(header.client, report)
            return
        self.reporter.send((header.extra or {}).get("reply"), report)
        self.control(header, target)

    def end(self, header: Header) -> None:
        """Pass an end marker on, with how many messages of its pipeline went out."""
        header.extra = dict(header.extra or {}, end=self.ends.pop(header.pipeline))
        self.control(header)

    @property
    def waiting(self) -> int:
        return (len(self.outbox) if self.outbox is not None else 0) + (
            self.outlet.waiting if self.outlet is not None else 0
        )

    @property
    def full(self) -> bool:
        return self.outbox is not None and self.outbox.full

    def flush(self) -> None:
        if self.outbox is not None:
            self.outbox.flush()

    def close(self) -> None:
        self.reporter.close()
        if self.db is not None:
            self.db.close()
            self.db = None


class StreamRouting:
    """The ``handle_stream`` hook of servers and masters, and sending by it.

    The class using it has ``name``, ``pipelined`` and ``routes`` (a :class:`StreamOut`).
    """

    _palm_framework = True
    name: str
    session: str
    pipelined: bool
    bound: dict[str, str]
    malformed: MalformedCounter
    routes: StreamOut

    logger: logging.Logger
    push_address: str | None
    db_address: str | None
    subscribers: int
    cache: Cache
    max_message_bytes: int
    #: How long a cache call on ``db_address`` may take before it fails with StateError.
    cache_timeout_s: float = DEFAULT_CACHE_TIMEOUT_S
    #: Cache calls that may wait for the cache before more are refused as busy.
    cache_queue: int = DEFAULT_CACHE_QUEUE

    def _open_outputs(self, sockets: Sockets, poller: Poller, **outlet_options: Any) -> None:
        """Open the outlet, the next stage's PUSH and the db endpoint, as configured."""
        self.routes.open(
            sockets,
            poller,
            self.push_address,
            self.session,
            self.logger,
            self.malformed,
            subscribers=self.subscribers,
            **outlet_options,
        )
        if self.db_address is not None:
            db = sockets.bind(zmq.ROUTER, self.db_address, "db")
            endpoint = DbEndpoint(
                db,
                self.name,
                self.cache,
                self.describe,
                self.malformed,
                self.max_message_bytes,
                timeout_s=self.cache_timeout_s,
                queue_size=self.cache_queue,
            )
            # cache calls run in the endpoint's threads; their answers come back here
            answers = sockets.connect(zmq.PULL, endpoint.inbox_address, curve=None)
            # both seldom busy, and only their own handlers send on them: watched
            # by descriptor, they cost the loop nothing while quiet
            if sockets.security is None:
                poller.add(db, endpoint.on_message, rare=True)
            else:  # read each peer's role: INFO tells clients less
                poller.add(db, endpoint.on_message, receive=endpoint.receive, rare=True)
            poller.add(answers, endpoint.on_answer, rare=True)
            self.routes.db = endpoint

    #: Peers refused at the CURVE handshake (see :mod:`palm.serve.auth`).
    refusals: Refusals | None = None

    def describe(self, peer_role: str | None = None) -> bytes:
        """The INFO answer: :meth:`_info` on the wire; without pids and host
        names for a ``client`` peer (with keys on, clients are outsiders)."""
        info = self._info()
        if self.refusals is not None:
            info.stats["refused"] = self.refusals.total
        if peer_role == "client":
            info.pid = 0
            info.host = ""
            info.workers = [
                {k: v for k, v in w.items() if k not in ("pid", "host")} for w in info.workers
            ]
        return info.to_wire()

    def _info(self) -> ServiceInfo:
        """What INFO answers (a hook: subclasses add fields)."""
        raise NotImplementedError

    def _info_with(self, kind: str, **fields: Any) -> ServiceInfo:
        """This server's INFO: what every server says, and ``fields``."""
        return ServiceInfo(
            name=self.name,
            kind=kind,
            session=self.session,
            addresses=dict(self.bound),
            next_call=self.routes.next_call,
            pipelined=self.pipelined,
            waiting=self.routes.waiting,
            malformed=self.malformed.total,
            pid=os.getpid(),
            host=socket.gethostname(),
            **fields,
        )

    def handle_stream(self, message: Message) -> str | None:
        """Where a result goes: a topic to stream it to, or None for its client.

        Override it to route message by message (it may also change the
        message's function, stage or payload). The default streams to this
        server's own topic when ``pipelined`` and returns to the client
        otherwise; a chained stage always sends to its next stage.
        """
        return self.name if self.pipelined else None

    @property
    def _routes_by_hook(self) -> bool:
        """True when a subclass routes each message itself (and there is no next stage)."""
        return (
            type(self).handle_stream is not StreamRouting.handle_stream
            and self.routes.next_address is None
        )

    def _send_on(self, header: Header, payloads: list[bytes]) -> None:
        """Send a message's results on, as a whole or as ``handle_stream`` decides."""
        if self._routes_by_hook:
            self._send_each(explode(header, payloads))
        else:
            self.routes.emit(self.routes.route(header), header, payloads)

    def _send_each(self, messages: Iterable[Message]) -> None:
        routes = self.routes
        by_hook = self._routes_by_hook
        for message in messages:
            if by_hook:
                target, message = self._hook_target(message)
            else:
                target = routes.route(message.header(Kind.RESULT))
            routes.emit(target, message.header(Kind.JOB), [message.payload])

    def _hook_target(self, message: Message) -> tuple[str | bytes, Message]:
        """Where ``handle_stream`` sends ``message``, and the message it sends.

        The hook returns a topic, None (the client), or ``(topic, message)``
        as pylm's did. A hook that raises or returns anything else fails this
        message only: it goes on as an error, the way results go by default.
        """
        try:
            answer: object = self.handle_stream(message)
            topic = answer
            if isinstance(answer, tuple) and len(answer) == 2:
                topic, replaced = answer
                if isinstance(replaced, Message) and (topic is None or isinstance(topic, str)):
                    message = replaced
                else:
                    topic = answer
            if topic is None:
                return message.client, message
            if isinstance(topic, str):
                return topic, message
            shape = (
                "(" + ", ".join(type(a).__name__ for a in topic) + ")"
                if isinstance(topic, tuple)
                else type(topic).__name__
            )
            raise TypeError(
                f"handle_stream returned {shape}; it returns a topic (str), "
                "None for the client, or (topic, message)"
            )
        except Exception as exc:  # the user's hook failed: this message fails, we go on
            failed = hook_failed(self, "handle_stream", message, exc)
            return self.routes.route(failed.header(Kind.RESULT)), failed

    @staticmethod
    def change_payload(message: Message, new_payload: bytes) -> Message:
        """A copy of ``message`` carrying ``new_payload`` (pylm's helper for the hooks)."""
        return dataclasses.replace(message, payload=new_payload)


class EndTracker:
    """Per pipeline: how many messages a stage sent on, for end markers.

    Bounded: the oldest pipelines are forgotten past ``limit`` (a client that
    died before its end marker leaves nothing behind for ever).
    """

    def __init__(self, limit: int = 10_000) -> None:
        self.limit = limit
        self.sent: OrderedDict[bytes, int] = OrderedDict()

    def count(self, pipeline: bytes | None, n: int) -> None:
        if pipeline is None:
            return
        sent = self.sent
        if pipeline in sent:
            sent[pipeline] += n
            return
        sent[pipeline] = n
        if len(sent) > self.limit:
            sent.popitem(last=False)

    def pop(self, pipeline: bytes | None) -> int:
        if pipeline is None:
            return 0
        return self.sent.pop(pipeline, 0)
