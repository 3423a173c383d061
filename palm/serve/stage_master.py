"""The parallel stage: a master with its own worker pool inside a chain or pipeline.

:class:`StageMaster` is a :class:`~palm.serve.master.Master` whose jobs come from
the previous stage (or a client) and whose results go on to the next stage,
to the subscribers of its stream, or back to the client, keeping client id,
job ids and pipeline id and counting the stage. Workers are ordinary
:class:`~palm.serve.worker.Worker` processes; they may know only ``db_address``.

Three hooks shape the stream, as generators:

* ``scatter(message)`` turns one incoming message into any number of jobs;
* ``gather(message)`` sees every result and yields zero or more messages;
* ``handle_stream(message)`` says where a message goes (a topic, or None
  for its client).

When a subclass overrides none of them, messages go through whole batches
at a time and no per-payload object is made.
"""

from __future__ import annotations

import itertools
import threading
import uuid
from collections.abc import Iterator, Sequence
from typing import Any

import zmq

from palm.errors import ProtocolError
from palm.serve.master import Job, Master
from palm.serve.stream import (
    NEXT,
    EndTracker,
    Message,
    Outbox,
    Outlet,
    Reporter,
    StreamRouting,
    explode,
    function_for,
    probe_report,
)
from palm.wire.protocol import Header, Kind, decode_header
from palm.wire.sockets import check_endpoint, make_socket

__all__ = ["StageMaster"]

#: Job ids a master gives the parts it scatters (far above any client's ids).
_PART_IDS_FROM = 1 << 60


class StageMaster(StreamRouting, Master):
    """A parallel stage. ``start()`` serves until SIGINT/SIGTERM or ``stop()``."""

    def __init__(
        self,
        name: str,
        worker_pull_address: str,
        worker_push_address: str,
        db_address: str | None = None,
        *,
        pull_address: str | None = None,
        upstreams: Sequence[tuple[str, str]] = (),
        next_address: str | None = None,
        next_call: str | None = None,
        push_address: str | None = None,
        pipelined: bool = False,
        subscribers: int = 1,
        palm: bool = False,
        **options: Any,
    ) -> None:
        if pull_address is None and not upstreams:
            raise ValueError(f"stage {name!r} needs a pull_address or upstream streams")
        if next_address is None and push_address is None:
            raise ValueError(f"stage {name!r} needs a next_address or a push_address")
        if next_address is not None and not next_call:
            raise ValueError(f"stage {name!r} has a next_address but no next_call")
        private = f"inproc://palm-{name}-{uuid.uuid4().hex}"
        super().__init__(
            name,
            pull_address or f"{private}-in",
            push_address or f"{private}-out",
            worker_pull_address,
            worker_push_address,
            db_address,
            palm=False,
            **options,
        )
        self.upstreams = [(check_endpoint(a, "upstream address"), t) for a, t in upstreams]
        self.next_address = check_endpoint(next_address, "next_address") if next_address else None
        self.next_call = next_call
        self.has_outlet = push_address is not None
        self.pipelined = pipelined
        self.subscribers = subscribers
        self.ends = EndTracker()
        self.pending: dict[bytes, int] = {}
        self.held_ends: dict[bytes, Header] = {}
        self._part_ids = itertools.count(_PART_IDS_FROM)
        klass = type(self)
        self._scatters = klass.scatter is not StageMaster.scatter
        self._gathers = klass.gather is not StageMaster.gather
        self._routes_by_hook = klass.handle_stream is not StageMaster.handle_stream
        self._outbox: Outbox | None = None
        self._outlet: Outlet | None = None
        self._reporter = Reporter()
        if palm:
            self._start_background()

    # hooks -------------------------------------------------------------------

    def scatter(self, message: Message) -> Iterator[Message]:
        """Turn one incoming message into jobs for the workers (default: itself)."""
        yield message

    def gather(self, message: Message) -> Iterator[Message]:
        """See one result; yield what goes on (default: the result itself)."""
        yield message

    # sockets -------------------------------------------------------------------

    def _loop(self) -> None:
        self._outlet = Outlet(
            self.client_out,
            self.name,
            self.session,
            self.logger,
            self.malformed,
            subscribers=self.subscribers,
        )
        extra: list[zmq.Socket[bytes]] = []
        feeder: _Feeder | None = None
        try:
            if self.next_address is not None:
                push = make_socket(zmq.PUSH)
                extra.append(push)
                push.connect(self.next_address)
                self._outbox = Outbox(push)
                self.bound["next"] = self.next_address
            if self.upstreams:
                feeder = _Feeder(self, self.bound["pull"])
                feeder.start()
            super()._loop()
        finally:
            if feeder is not None:
                feeder.join(5)
            for sock in extra:
                sock.close(0)
            self._reporter.close()

    def _window_open(self) -> bool:
        return super()._window_open() and not (self._outbox is not None and self._outbox.full)

    def _heartbeat(self, now: float) -> None:
        super()._heartbeat(now)
        if self._outbox is not None:
            self._outbox.flush()

    def _on_client_control(self, frames: list[bytes]) -> None:
        assert self._outlet is not None
        self._outlet.on_message(frames)

    # messages in ---------------------------------------------------------------

    def _accept(self, job: Job) -> None:
        header = job.header
        header.stage += 1
        count = len(job.frames) - 1
        if header.pipeline is not None:
            self.pending[header.pipeline] = self.pending.get(header.pipeline, 0) + count
        if not (header.errors or self._scatters or " " in header.function):
            job.frames[0] = header.to_wire()
            self._enqueue(job)
            return
        for message in explode(header, job.frames[1:]):
            if message.error is not None:
                self._send_on([message])
                self._settle(message.pipeline, 1)
                continue
            parts = list(self.scatter(message)) if self._scatters else [message]
            self._settle(message.pipeline, 1 - len(parts))
            for part in parts:
                self._enqueue(self._job(part, message.id))

    def _job(self, part: Message, origin: int) -> Job:
        extra = dict(part.extra or {})
        if " " in part.function:
            extra["route"] = part.function
            part.function = _entry(part.function, self.name)
        if self._scatters:
            extra["of"] = origin
            part.id = next(self._part_ids)
        part.extra = extra or None
        header = part.header(Kind.JOB)
        bare = part.function.rpartition(".")[2]
        return Job(part.client, header, [header.to_wire(), part.payload], bare)

    def _on_stream_control(self, header: Header, frames: list[bytes]) -> None:
        header.stage += 1
        if header.kind == Kind.PING:
            self._on_probe(header)
        elif header.kind == Kind.BYE and header.pipeline is not None:
            if self.pending.get(header.pipeline, 0) > 0:
                self.held_ends[header.pipeline] = header
            else:
                self._end(header)
        else:
            super()._on_stream_control(header, frames)

    def _on_probe(self, header: Header) -> None:
        target = self._route(header)
        report = probe_report(
            header,
            self.name,
            last=isinstance(target, bytes),
            next=self._next_desc(),
            workers=len(self.workers),
            queued=self.queued,
            inflight=len(self.inflight),
            waiting=len(self._outbox) if self._outbox is not None else 0,
        )
        if isinstance(target, bytes):
            assert self._outlet is not None
            self._outlet.to_client(header.client, report)
            return
        self._reporter.send((header.extra or {}).get("reply"), report)
        self._control_on(target, header)

    def _end(self, header: Header) -> None:
        assert header.pipeline is not None
        header.extra = dict(header.extra or {}, end=self.ends.pop(header.pipeline))
        self._control_on(self._route(header), header)

    def _control_on(self, target: str | bytes, header: Header) -> None:
        frames = [header.to_wire()]
        if target == NEXT:
            assert self._outbox is not None
            self._outbox.send(frames)
        elif self._outlet is not None:
            if isinstance(target, bytes):
                self._outlet.to_client(target, frames)
            else:
                self._outlet.to_topic(target, frames)

    def _settle(self, pipeline: bytes | None, done: int) -> None:
        """``done`` payloads of ``pipeline`` left this master (negative: more came)."""
        if pipeline is None:
            return
        left = self.pending.get(pipeline, 0) - done
        if left > 0:
            self.pending[pipeline] = left
            return
        self.pending.pop(pipeline, None)
        held = self.held_ends.pop(pipeline, None)
        if held is not None:
            self._end(held)

    # results out -------------------------------------------------------------

    def _deliver(self, header: Header, frames: list[bytes]) -> None:
        payloads = frames[1:]
        extra = header.extra
        if extra is not None:
            extra.pop("w", None)
            route = extra.pop("route", None)
            if isinstance(route, str):
                header.function = route
            origin = extra.pop("of", None)
            if isinstance(origin, int):
                header.id = origin
            header.extra = extra or None
        if header.errors:
            for info in header.errors:
                if info.stage == header.stage and info.server != self.name:
                    info.message = f"{info.message} (in worker {info.server})"
                    info.server = self.name
        pipeline = header.pipeline
        if self._gathers or self._routes_by_hook:
            messages = explode(header, payloads)
            if self._gathers:
                messages = [out for message in messages for out in self.gather(message)]
            self._send_on(messages)
        else:
            self._emit(self._route(header), header, payloads)
        self._settle(pipeline, len(payloads))

    def _send_on(self, messages: list[Message]) -> None:
        for message in messages:
            if self._routes_by_hook and self.next_address is None:
                topic = self.handle_stream(message)
                target: str | bytes = message.client if topic is None else topic
            else:
                target = self._route(message.header(Kind.RESULT))
            self._emit(target, message.header(Kind.JOB), [message.payload])

    def _emit(self, target: str | bytes, header: Header, payloads: list[bytes]) -> None:
        self.ends.count(header.pipeline, len(payloads))
        if target == NEXT:
            assert self._outbox is not None and self.next_call is not None
            header.kind = Kind.JOB
            if " " not in header.function:
                header.function = self.next_call
            self._outbox.send([header.to_wire(), *payloads])
            return
        assert self._outlet is not None
        if isinstance(target, bytes):
            header.kind = Kind.RESULT
            self._outlet.to_client(target, [header.to_wire(), *payloads])
        else:
            header.kind = Kind.JOB
            self._outlet.to_topic(target, [header.to_wire(), *payloads])

    def _answer_error(self, job: Job, type_: str, message: str) -> None:
        if type_ == "palm.PayloadTooLarge" and job.attempts == 0:
            # refused on the way in: it never counted as pending
            job.header.stage += 1
            if job.header.pipeline is not None:
                self.pending[job.header.pipeline] = self.pending.get(job.header.pipeline, 0) + (
                    len(job.frames) - 1
                )
        super()._answer_error(job, type_, message)

    def describe(self) -> bytes:
        import msgpack

        info = msgpack.unpackb(super().describe(), raw=False)
        info.update(
            kind=type(self).__name__,
            next_call=self.next_call,
            pipelined=self.pipelined,
            waiting=(len(self._outbox) if self._outbox else 0)
            + (self._outlet.waiting if self._outlet else 0),
        )
        packed = msgpack.packb(info, use_bin_type=True)
        assert isinstance(packed, bytes)
        return packed


def _entry(route: str, server: str) -> str:
    return function_for(route, server) or route.split()[0]


class _Feeder(threading.Thread):
    """Takes a stage master's input from upstream streams (a Hub's subscriptions)
    and hands it to the master's own job socket."""

    def __init__(self, master: StageMaster, inbox: str) -> None:
        super().__init__(name=f"palm-feeder-{master.name}", daemon=True)
        self.master = master
        self.inbox = inbox

    def run(self) -> None:
        master = self.master
        push = make_socket(zmq.PUSH)
        push.connect(self.inbox)
        dealers: list[zmq.Socket[bytes]] = []
        poller = zmq.Poller()
        for address, _topic in master.upstreams:
            dealer = make_socket(
                zmq.DEALER,
                identity=f"palm-sub:{master.name}:{uuid.uuid4().hex[:8]}".encode(),
                max_message_bytes=master.max_message_bytes,
            )
            dealer.connect(address)
            dealers.append(dealer)
            poller.register(dealer, zmq.POLLIN)
        interval_ms = max(1, int(master.heartbeat_interval_s * 1000))
        try:
            self._hello(dealers)
            while not master._stopper.stopping:
                events = dict(poller.poll(interval_ms))
                if not events:
                    self._hello(dealers)
                for dealer in dealers:
                    if dealer not in events:
                        continue
                    for _ in range(256):
                        try:
                            frames = dealer.recv_multipart(zmq.NOBLOCK)
                        except zmq.Again:
                            break
                        if len(frames) == 1 and _is_welcome(frames[0]):
                            continue  # the upstream acknowledging the subscription
                        push.send_multipart(frames)
        finally:
            for dealer in dealers:
                dealer.close(0)
            push.close(0)

    def _hello(self, dealers: list[zmq.Socket[bytes]]) -> None:
        master = self.master
        for (_address, topic), dealer in zip(master.upstreams, dealers, strict=True):
            hello = Header(Kind.HELLO, 0, extra={"previous": topic, "name": master.name})
            try:
                dealer.send_multipart([hello.to_wire()], zmq.NOBLOCK)
            except zmq.ZMQError:
                pass


def _is_welcome(frame: bytes) -> bool:
    try:
        return decode_header(frame).kind == Kind.WELCOME
    except ProtocolError:
        return False
