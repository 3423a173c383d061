"""The serial server: one process running its functions, alone or in a chain or pipeline.

A :class:`Server` runs in one of two modes, with the same loop, the same
place that runs jobs (:meth:`Server._run`), the same Redis logs and counters
(its :class:`~palm.state.deployment.Deployment`) and the same INFO answer:

* **request/reply** (``address``): a ROUTER socket; each client connects a
  DEALER, so replies go back to the client that asked, in whatever order
  clients send, and no client can wedge another. A single small job in a
  compact frame takes a short path (:meth:`Server._compact_job`)::

      class MyServer(Server):
          def foo(self, message):
              return b'you sent me ' + message

      MyServer('my_server', 'tcp://127.0.0.1:5555').start()

* **stream** (a chain or pipeline stage)::

      previous stage / client --PUSH--> pull_address (PULL)   messages in
      upstream's push_address (ROUTER) <-DEALER-               messages in, by subscription
      next_address (PULL of the next stage) <-PUSH-            messages on (chained)
      clients and subscribers <-DEALER- push_address (ROUTER)  results out / stream out
      anyone <-DEALER- db_address (ROUTER)                     ping, info, cache

  A payload that failed at an earlier stage keeps its error and passes
  through untouched. Where results go is :meth:`Server.handle_stream`'s
  choice: the next stage (``next_address``, calling ``next_call``), the
  subscribers of this server's stream (``pipelined``), or the client. See
  :mod:`palm.serve.stream` for probes and end markers.
"""

from __future__ import annotations

import functools
import time
import uuid
from collections.abc import Callable, Sequence
from typing import Any, Literal

import zmq

from palm.errors import ConfigError, PayloadTooLarge, ProtocolError
from palm.serve.auth import Refusals
from palm.serve.loop import HandlerGuard, Poller, Sockets, subscribe
from palm.serve.service import Service, split_function
from palm.serve.stopper import Stopper
from palm.serve.stream import StreamOut, StreamRouting, function_for
from palm.state.cache import Cache, MemoryCache
from palm.state.deployment import Deployment
from palm.wire.arena import SHARED_KEY, UNREADABLE, resolve
from palm.wire.control import unparsable
from palm.wire.info import ServiceInfo
from palm.wire.messages import (
    COMPACT_BELOW_BYTES,
    compact_parts,
    compact_reply,
    encode_compact,
    job_tail,
    reply_head,
    routed,
)
from palm.wire.protocol import (
    DEFAULT_MAX_MESSAGE_BYTES,
    ErrorInfo,
    Header,
    Kind,
    MalformedCounter,
    check_size,
    decode,
    decode_header,
    frames_for,
    is_compact,
    job_count,
    jobs_in,
    request_id_of,
)
from palm.wire.security import KeysOption, security_for
from palm.wire.sockets import check_endpoint, send_frames

__all__ = ["Server"]

#: What a compact JOB header asks for: the function, its name as the header
#: gives it (for logs), its bare name (for counters), the stage, the request id.
_Route = tuple[Callable[[bytes], Any], str, str, int, "str | None"]

#: Header tails a server keeps the routes of (see ``Server._compact_job``).
_COMPACT_ROUTES = 256


class Server(StreamRouting, Service):
    """A serial server: ``Server(name, address).start()`` serves until stopped.

    Give ``address`` for request/reply, or the stream options (``pull_address``
    or ``upstreams`` in; ``next_address`` with ``next_call``, or
    ``push_address``, out) for a stage of a chain or pipeline.
    """

    _palm_framework = True

    def __init__(
        self,
        name: str,
        address: str | None = None,
        db_address: str | None = None,
        *,
        pull_address: str | None = None,
        upstreams: Sequence[tuple[str, str]] = (),
        next_address: str | None = None,
        next_call: str | None = None,
        push_address: str | None = None,
        pipelined: bool = False,
        subscribers: int = 1,
        cache: Cache | None = None,
        heartbeat_interval_s: float = 1.0,
        max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES,
        redis_url: str | Literal[False] | None = None,
        cluster: str | None = None,
        keys: KeysOption = None,
    ) -> None:
        super().__init__(name)
        streams = pull_address or upstreams or next_address or push_address
        if address is not None and streams:
            raise ConfigError(f"server {name!r} takes an address or stream options, not both")
        if address is None:
            if pull_address is None and not upstreams:
                raise ConfigError(f"stage {name!r} needs a pull_address or upstream streams")
            if next_address is None and push_address is None:
                raise ConfigError(f"stage {name!r} needs a next_address or a push_address")
            if next_address is not None and not next_call:
                raise ConfigError(f"stage {name!r} has a next_address but no next_call")
        #: True for request/reply on ``address``, False for a stage of a stream.
        self.replying = address is not None
        self.address = check_endpoint(address, "address") if address is not None else None
        self.db_address = check_endpoint(db_address, "db_address") if db_address else None
        self.pull_address = check_endpoint(pull_address, "pull_address") if pull_address else None
        self.upstreams = [(check_endpoint(a, "upstream address"), t) for a, t in upstreams]
        self.next_address = check_endpoint(next_address, "next_address") if next_address else None
        self.next_call = next_call
        self.push_address = check_endpoint(push_address, "push_address") if push_address else None
        self.pipelined = pipelined
        self.subscribers = subscribers
        self.heartbeat_interval_s = heartbeat_interval_s
        self.max_message_bytes = max_message_bytes
        self.session = uuid.uuid4().hex[:12]
        self.deployment = Deployment(name, redis_url=redis_url, cluster=cluster, start_redis=True)
        self.counters = self.deployment.counters
        self._cache = cache
        self.cache: Cache = cache if cache is not None else MemoryCache()
        self.malformed = MalformedCounter(name, self.logger)
        #: what the loop caught of exceptions no handler foresaw
        self.failures = HandlerGuard(f"server {name}", self.logger)
        #: CURVE for every socket (``keys=`` or PALM_KEYS; None: plain)
        self.security = security_for(keys, "stage")
        self.refusals = Refusals(f"server {name}", self.logger)
        #: Jobs taken in, and those that failed here.
        self.handled = 0
        self.failed = 0
        self.bound: dict[str, str] = {}
        self.bound_address: str | None = None
        self.routes = StreamOut(name, self.next_address, next_call, pipelined, self.bound)
        #: Called once every socket is bound (``bound`` holds the endpoints).
        self.on_ready: Callable[[Any], None] | None = None
        # single compact jobs skip the general path unless a subclass handles jobs itself
        self._fast_jobs = type(self).handle_job is Server.handle_job
        #: whether user calls may skip :meth:`call` (a subclass's ``call`` sees every job)
        self._plain_calls = type(self).call is Service.call
        self._compact_routes: dict[bytes, _Route] = {}
        self._stopper = Stopper()
        self._socket: zmq.Socket[bytes] | None = None

    def shared_cache(self) -> Cache:
        if self.deployment.state is not None:
            return self.deployment.state
        if self._cache is not None:
            return self._cache
        return super().shared_cache()

    # lifecycle -----------------------------------------------------------------

    def stop(self) -> None:
        """Ask a running :meth:`start` to return after the message in hand."""
        self._stopper.stop()

    def start(self) -> None:
        """Bind and connect, serve until SIGINT/SIGTERM or :meth:`stop`, close, return."""
        sockets = Sockets(
            self.name,
            self.bound,
            self.max_message_bytes,
            security=self.security,
            refusals=self.refusals,
        )
        poller = Poller(self._stopper.fd, self.failures)
        self.deployment.open()
        if self._cache is None and self.deployment.state is not None:
            self.cache = self.deployment.state
        try:
            dealers = self._open(sockets, poller)
            self.logger.info("%s serving %s on %s", self.name, self.functions, self.bound)
            if self.on_ready is not None:
                self.on_ready(self)
            with self._stopper.on_signals():
                self._serve(poller, dealers)
        finally:
            sockets.close()
            self._socket = None
            self.routes.close()
            self._stopper.close()
            self._stopper = Stopper()
            self.deployment.close()
            self.logger.info("%s stopped", self.name)

    def _open(self, sockets: Sockets, poller: Poller) -> list[zmq.Socket[bytes]]:
        """Bind and connect this server's sockets, registered with ``poller``; the
        upstream DEALERs (to subscribe again while nothing comes)."""
        if self.address is not None:
            sock = sockets.bind(zmq.ROUTER, self.address, "address")
            sock.setsockopt(zmq.ROUTER_MANDATORY, 1)
            self._socket = sock
            self.bound_address = self.bound["address"]
            poller.add(sock, self._on_request)
        if self.pull_address is not None:
            pull = sockets.bind(zmq.PULL, self.pull_address, "pull")
            poller.add(pull, functools.partial(self._on_stream, source=0))
        dealers: list[zmq.Socket[bytes]] = []
        for address, _topic in self.upstreams:
            dealer = sockets.subscriber(address)
            poller.add(dealer, functools.partial(self._on_stream, source=len(dealers)))
            dealers.append(dealer)
        self._open_outputs(sockets, poller)
        self._inputs = [*([pull] if self.pull_address is not None else []), *dealers]
        return dealers

    def _serve(self, poller: Poller, dealers: list[zmq.Socket[bytes]]) -> None:
        interval_ms = max(1, int(self.heartbeat_interval_s * 1000))
        stopper = self._stopper
        routes = self.routes
        topics = [topic for _address, topic in self.upstreams]
        reading = True
        subscribe(dealers, topics, self.name)
        while not stopper.stopping:
            busy = poller.poll(interval_ms if not routes.waiting else 50)
            if not busy:
                subscribe(dealers, topics, self.name)
                if routes.outlet is not None:
                    routes.outlet.expire(time.monotonic())
            if routes.outbox is not None:
                routes.outbox.flush()
                if routes.outbox.full == reading:
                    reading = not reading
                    for sock in self._inputs:
                        poller.pause(sock, not reading)

    # request/reply ---------------------------------------------------------------

    def _on_request(self, frames: list[bytes]) -> None:
        reply = self._handle(frames)
        if reply is not None:
            assert self._socket is not None
            try:
                send_frames(self._socket, reply)
            except zmq.ZMQError as exc:  # peer gone (ROUTER_MANDATORY)
                self.logger.info("%s could not answer a client: %s", self.name, exc)

    def _handle(self, frames: list[bytes]) -> list[bytes] | None:
        """The reply to a request on the ROUTER (identity first), or None for none."""
        if len(frames) == 2 and frames[1][:1] == b"\xc1" and self._fast_jobs:
            reply = self._compact_job(frames[1])
            if reply is not None:
                return [frames[0], *reply]
        try:
            check_size(frames, self.max_message_bytes)
            identity, header, payloads = routed(frames)
        except PayloadTooLarge as exc:
            return [frames[0], *self._too_large(frames[1:], exc)]
        except ProtocolError as exc:
            self.malformed.record(str(exc))
            return None
        if header.kind == Kind.JOB:
            try:
                jobs = jobs_in(header, payloads)
            except ProtocolError as exc:
                # the client hears why, one error per job it sent
                self.malformed.record(str(exc))
                bad, empties = unparsable(header, payloads, str(exc), self.name)
                self.failed += len(empties)
                return [identity, bad.to_wire(), *frames_for(bad, empties)]
            reply_header, results = self.handle_job(header, jobs)
            if (
                len(frames) == 2
                and len(results) == 1
                and len(results[0]) < COMPACT_BELOW_BYTES
                and is_compact(frames[1:])
            ):  # answer in the form asked
                return [identity, *encode_compact(reply_header, results[0])]
            return [identity, reply_header.to_wire(), *frames_for(reply_header, results)]
        if header.kind == Kind.PING:
            return [identity, header.reply().to_wire(), b"pong"]
        if header.kind == Kind.INFO:
            # with keys, the peers of this socket are clients: no pids or host names
            peer = "client" if self.security is not None else None
            return [identity, header.reply().to_wire(), self.describe(peer)]
        self.malformed.record(f"unexpected {Kind.NAMES[header.kind]} message")
        return None

    def _compact_job(self, frame: bytes) -> list[bytes] | None:
        """The reply to a single job in a compact frame, the common request.

        The same work and answer as :meth:`handle_job`, with the reply's header
        made from the request's bytes. None, before running anything, for a
        message this path does not take: the general path handles it.

        What a header asks for (the function, its names, the stage) is worked
        out once per header tail (:func:`~palm.wire.messages.job_tail`: the
        header but for the job id) and kept in :attr:`_compact_routes`: a
        client calling the same function again is answered without decoding
        its header, and with less code run per request, which counts on a
        machine whose caches are cold after each wait.
        """
        if len(frame) > self.max_message_bytes:
            return None
        keyed = job_tail(frame)
        if keyed is None:
            return None
        tail, end = keyed
        route = self._compact_routes.get(tail)
        if route is None:
            route = self._compact_route(frame[3:end], tail)
            if route is None:
                return None
        func, label, function, stage, request_id = route
        started = time.monotonic()
        error: ErrorInfo | None
        if request_id is None and self._plain_calls:  # Service.call, without its frames
            try:
                result = func(frame[end:])
            except Exception as exc:
                result, error = self._failed(exc, label, 0, stage)
            else:
                error = None
                if type(result) is not bytes:
                    result, error = self._as_bytes(result, label, 0, stage)
        else:
            result, error = self.call(func, label, frame[end:], 0, stage, request_id)
        self.handled += 1
        if error is not None:
            self.failed += 1
            self.counters.record_batch(function, time.monotonic() - started, 1, 1)
            reply = decode_header(frame[3:end]).reply()
            reply.errors = [error]
            return encode_compact(reply, b"")
        self.counters.record_batch(function, time.monotonic() - started, 1, 0)
        if len(result) >= COMPACT_BELOW_BYTES:
            answer = reply_head(frame[3:end])
            assert answer is not None  # job_tail checked how the header begins
            return [answer, result]
        return [compact_reply(frame, end, result)]

    def _compact_route(self, head: bytes, tail: bytes) -> _Route | None:
        """What the compact JOB header ``head`` asks for, kept under its ``tail`` when
        it names no request or pipeline (those differ call by call); None for a
        header the general path answers."""
        try:
            header = decode_header(head)
        except ProtocolError:
            return None
        func = self.resolve(header.function)
        if func is None or header.packed:
            return None
        function = split_function(header.function)[1]
        route = (func, header.function, function, header.stage, request_id_of(header.extra, 0))
        if header.extra is None and header.pipeline is None and header.key is None:
            routes = self._compact_routes
            if len(routes) >= _COMPACT_ROUTES:
                routes.clear()  # many clients or functions: start over
            routes[tail] = route
        return route

    def handle_job(self, header: Header, payloads: list[bytes]) -> tuple[Header, list[bytes]]:
        """Run ``header.function`` on each payload: the reply header and results."""
        reply = header.reply()
        results, errors = self._run(header, payloads)
        if errors:
            reply.errors = errors
        return reply, results

    def _too_large(self, frames: list[bytes], exc: PayloadTooLarge) -> list[bytes]:
        """The error reply to an oversized request (``frames`` without the identity)."""
        parts = compact_parts(frames[0]) if is_compact(frames) else None
        try:
            reply = decode_header(parts[0] if parts is not None else frames[0]).reply()
        except ProtocolError:
            self.malformed.record("oversized message without a valid header")
            reply = Header(Kind.RESULT)
        count = 1 if is_compact(frames) else job_count(reply, max(1, len(frames) - 1))
        self.logger.warning("%s refused a message: %s", self.name, exc)
        reply.kind = Kind.RESULT
        reply.errors = self._refused(exc, count, reply.stage)
        return [reply.to_wire(), *frames_for(reply, [b""] * count)]

    def _refused(self, exc: PayloadTooLarge, count: int, stage: int) -> list[ErrorInfo]:
        self.failed += count
        return [
            ErrorInfo(i, "palm.PayloadTooLarge", str(exc), "", self.name, stage)
            for i in range(count)
        ]

    # running jobs ----------------------------------------------------------------

    def _run(self, header: Header, payloads: list[bytes]) -> tuple[list[bytes], list[ErrorInfo]]:
        """Run the function ``header`` names here on every payload that has not
        failed at an earlier stage; count them and record them in the counters."""
        function = function_for(header.function, self.name)
        func = self.resolve(function) if function else None
        name = split_function(function or header.function)[1]
        passed = {e.offset: e for e in header.errors} if header.errors else None
        started = time.monotonic()
        if func is None:
            errors = [
                (passed or {}).get(i) or self._unknown(header.function, i, header.stage)
                for i in range(len(payloads))
            ]
            results = [b""] * len(payloads)
        else:
            results, errors = self.call_all(
                func, header, payloads, function=function, passed=passed
            )
            self.handled += len(payloads)
        failed = len(errors) - (len(passed) if passed else 0)
        self.failed += failed
        elapsed = time.monotonic() - started if func is not None else 0.0
        self.counters.record_batch(name, elapsed, len(payloads), failed)
        return results, errors

    def _unknown(self, function: str, offset: int, stage: int) -> ErrorInfo:
        if " " in function and not function_for(function, self.name):
            return ErrorInfo(
                offset,
                "palm.UnknownFunction",
                f"the route {function!r} does not name {self.name!r}",
                "",
                self.name,
                stage,
            )
        return self.unknown(function, offset, stage)

    # streams ---------------------------------------------------------------------

    def _on_stream(self, frames: list[bytes], source: int) -> None:
        """A message from the previous stage, a client or an upstream stream."""
        try:
            check_size(frames, self.max_message_bytes)
            header, payloads = decode(frames)
        except PayloadTooLarge as exc:
            self._refuse(frames, exc)
            return
        except ProtocolError as exc:
            self.malformed.record(str(exc))
            return
        if header.packed:  # stages pass jobs on one frame each
            try:
                payloads = jobs_in(header, payloads)
            except ProtocolError as exc:
                self._pass_on_failed(header, payloads, exc)
                return
            header.packed = 0
        if header.kind == Kind.JOB and header.extra and SHARED_KEY in header.extra:
            try:  # a client's large payloads in its shared-memory arena
                payloads = resolve(header.extra, payloads, self.max_message_bytes)
            except ProtocolError as exc:
                self._pass_on_failed(header, payloads, exc, UNREADABLE)
                return
        header.stage += 1
        if header.kind == Kind.JOB:
            results, errors = self._run(header, payloads)
            header.errors = errors or None
            self._send_on(header, results)
        elif header.kind == Kind.PING:
            self.routes.probe(header)
        elif header.kind == Kind.BYE and header.pipeline is not None:
            self._on_end(header, source)
        elif header.kind == Kind.WELCOME:
            pass  # an upstream acknowledging our subscription
        else:
            self.malformed.record(f"unexpected {Kind.NAMES[header.kind]} on the stream")

    def _pass_on_failed(
        self,
        header: Header,
        payloads: list[bytes],
        exc: ProtocolError,
        error_type: str = "palm.ProtocolError",
    ) -> None:
        """A message whose jobs cannot be read: passed on as failed here, one error
        per job announced (nothing for a message that is not a JOB)."""
        self.malformed.record(str(exc))
        if header.kind != Kind.JOB:
            return
        header.errors = None
        bad, empties = unparsable(header, payloads, str(exc), self.name, error_type)
        bad.kind = Kind.JOB
        bad.stage += 1
        for info in bad.errors or ():
            info.stage = bad.stage
        self.failed += len(empties)
        bad.packed = 0
        self._send_on(bad, empties)

    def _on_end(self, header: Header, source: int) -> None:
        """An end marker: everything of its pipeline that came before it has gone on."""
        self.routes.end(header)

    def _refuse(self, frames: list[bytes], exc: PayloadTooLarge) -> None:
        try:
            header = decode_header(frames[0])
        except (ProtocolError, IndexError):
            self.malformed.record("oversized message without a valid header")
            return
        self.logger.warning("%s refused a message: %s", self.name, exc)
        header.stage += 1
        count = max(1, len(frames) - 1)
        header.errors = self._refused(exc, count, header.stage)
        self._send_on(header, [b""] * count)

    # info ------------------------------------------------------------------------

    def _info(self) -> ServiceInfo:
        """What INFO answers (a hook: subclasses add fields)."""
        return self._info_with(
            "server",
            functions=self.functions,
            address=self.bound_address,
            stats={
                "jobs_in": self.handled,
                "jobs_out": self.handled if self.replying else self.routes.sent,
                "failed": self.failed,
            },
        )
