"""The client of a chain or pipeline: send into the first stage, receive from the last.

Address names mirror the servers': ``pull_address`` is the first stage's
``pull_address`` (the client PUSHes jobs there) and ``push_address`` is the
last stage's ``push_address`` (a ROUTER; the client's DEALER, named by its
client id, receives its own results there, so many clients share a chain).

Each ``job()`` call is one pipeline: its messages carry a fresh pipeline id,
and after the last one the client sends an end marker. Without
``messages=`` the call returns when the end marker comes back (every stage
passed it on after the pipeline's messages), so a stage that scatters one
message into many, or gathers many into one, needs no counting by the
caller. With ``messages=n`` it returns after ``n`` results.

When nothing arrives for a while, the client probes the chain: a PING goes
into the first stage and every stage reports to the client's receiving
endpoint as it passes the probe on (see :mod:`palm.serve.stream`). The
:class:`~palm.errors.TimeoutError` raised at ``timeout_s`` names the stage
that did not answer, or says that every stage answers and what they hold.
Results of an abandoned call are told apart by pipeline id and dropped, so
the client stays usable; when the missing stage comes back, new jobs flow.
"""

from __future__ import annotations

import os
import time
import uuid
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

import zmq

from palm.call.base import DEFAULT, DEFAULT_TIMEOUT_S, PairClient, Timeout
from palm.call.jobs import reserve_ids, take_payloads
from palm.errors import ConfigError, ProtocolError, RemoteError, TimeoutError
from palm.wire.discovery import CacheCalls
from palm.wire.messages import control, job_message
from palm.wire.protocol import DEFAULT_MAX_MESSAGE_BYTES, Header, Kind, decode
from palm.wire.security import KeysOption
from palm.wire.sockets import check_endpoint, send_frames

__all__ = ["DEFAULT_TIMEOUT_S", "Delivery", "StreamClient"]


@dataclass(frozen=True, slots=True)
class Delivery:
    """One result as it reached the client, with where it has been."""

    payload: bytes
    error: RemoteError | None
    id: int
    stage: int
    pipeline: bytes | None


class StreamClient(PairClient, CacheCalls):
    """Sends jobs into the first stage of a chain and takes results from the last."""

    def __init__(
        self,
        push_address: str,
        pull_address: str,
        db_address: str | None = None,
        server_name: str = "",
        *,
        timeout_s: float | None = DEFAULT_TIMEOUT_S,
        probe_s: float = 1.0,
        window: int | None = 2_000,
        batch: int = 64,
        heartbeat_interval_s: float = 1.0,
        max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES,
        keys: KeysOption = None,
    ) -> None:
        super().__init__(
            push_address,
            pull_address,
            check_endpoint(db_address, "db_address") if db_address else None,
            server_name,
            timeout_s=timeout_s,
            max_message_bytes=max_message_bytes,
            heartbeat_interval_s=heartbeat_interval_s,
            keys=keys,
            needs="server_name must name the first server",
        )
        self.probe_s = probe_s
        self.window = window
        self.batch = batch

    # public ----------------------------------------------------------------------

    def job(
        self,
        function: str,
        iterable: Iterable[bytes],
        messages: int | None = None,
        *,
        cache: str | None = None,
        errors: str = "raise",
        timeout_s: Timeout = DEFAULT,
    ) -> Iterator[bytes | RemoteError]:
        """Send every payload to ``function``; yield results as they arrive.

        ``function`` is ``'foo'`` (on the first server), ``'server.foo'``, or
        a route ``'a.f b.g'``. ``messages`` stops after that many results.
        ``errors='yield'`` yields a :class:`RemoteError` in place of a failed
        result instead of raising it.
        """
        if errors not in ("raise", "yield"):
            raise ConfigError("errors must be 'raise' or 'yield'")
        for delivery in self.deliveries(
            function, iterable, messages, cache=cache, timeout_s=timeout_s
        ):
            if delivery.error is None:
                yield delivery.payload
            elif errors == "raise":
                raise delivery.error
            else:
                yield delivery.error

    def eval(self, function: str, payload: bytes, *, cache: str | None = None) -> bytes:
        """Run ``function`` on one payload and return its result."""
        for result in self.job(function, [payload], 1, cache=cache):
            assert isinstance(result, bytes)
            return result
        raise TimeoutError("the chain ended the job without a result")

    def deliveries(
        self,
        function: str,
        iterable: Iterable[bytes],
        messages: int | None = None,
        *,
        cache: str | None = None,
        pipeline: bytes | None = None,
        timeout_s: Timeout = DEFAULT,
    ) -> Iterator[Delivery]:
        """Like :meth:`job`, yielding a :class:`Delivery` (payload, error, stage...) each."""
        timeout = self.resolve_timeout(timeout_s)
        self.ensure_open()
        call = _Call(self, self.qualify(function), iter(iterable), messages, cache, pipeline)
        yield from call.drive(timeout)

    def probe(self, wait_s: float | None = None) -> list[dict[str, Any]]:
        """Send a probe down the chain; the reports of the stages that answered in time."""
        call = _Call(self, self.qualify("probe"), iter(()), 0, None, None)
        return call.probe_only(self.probe_s if wait_s is None else wait_s)

    def close(self) -> None:
        """Say BYE to the last stage and close; later calls raise
        :class:`~palm.errors.ClientClosed`."""
        socks = self._sockets
        if not self.closed and socks is not None and self._pid == os.getpid():
            try:
                socks[1].send_multipart(control(Kind.BYE, self.client_id), zmq.NOBLOCK)
            except zmq.ZMQError:
                pass
        super().close()


class _Call:
    """One ``job()`` call: its pipeline, window, probe and timeout."""

    def __init__(
        self,
        client: StreamClient,
        function: str,
        source: Iterator[bytes],
        messages: int | None,
        cache: str | None,
        pipeline: bytes | None,
    ) -> None:
        if messages is not None and messages < 0:
            raise ConfigError("messages must be zero or more")
        self.client = client
        self.function = function
        self.source = source
        self.messages = messages
        self.cache = cache
        self.pipeline = pipeline or uuid.uuid4().bytes
        self.sent = 0
        self.received = 0
        self.exhausted = False
        self.ended = False
        self.probe_id: int | None = None
        self.probe_started = 0.0
        self.reports: list[dict[str, Any]] = []
        self.welcomed_since_probe = False

    # sending -------------------------------------------------------------------

    def fill(self, push: zmq.Socket[bytes]) -> None:
        client = self.client
        while not self.exhausted:
            room = client.batch
            if client.window is not None:
                room = min(room, client.window - (self.sent - self.received))
                if room <= 0:
                    return
            payloads, self.exhausted = take_payloads(self.source, room, client.max_message_bytes)
            if payloads:
                first = reserve_ids(client.ids, len(payloads))
                message = job_message(
                    client.client_id,
                    first,
                    self.function,
                    payloads,
                    pipeline=self.pipeline,
                    key=self.cache,
                    pack=False,
                )
                send_frames(push, message)
                self.sent += len(payloads)
            if self.exhausted:
                end = Header(
                    Kind.BYE,
                    next(client.ids),
                    client.client_id,
                    self.function,
                    0,
                    self.pipeline,
                    extra={"end": self.sent},
                )
                push.send_multipart([end.to_wire()])

    def send_probe(self, push: zmq.Socket[bytes], dealer: zmq.Socket[bytes]) -> None:
        client = self.client
        self.probe_id = next(client.ids)
        self.probe_started = time.monotonic()
        self.reports = []
        self.welcomed_since_probe = False
        ping = Header(
            Kind.PING,
            self.probe_id,
            client.client_id,
            self.function,
            0,
            self.pipeline,
            extra={"reply": client.push_address},
        )
        push.send_multipart([ping.to_wire()])
        dealer.send_multipart(client.session.hello(self.probe_started))

    # receiving -------------------------------------------------------------------

    @property
    def done(self) -> bool:
        if self.messages is not None:
            return self.received >= self.messages
        return self.ended

    def accept(self, frames: list[bytes]) -> list[Delivery]:
        try:
            header, payloads = decode(frames)
        except ProtocolError:
            return []
        if header.kind == Kind.WELCOME:
            self.client.session.read(header)
            self.welcomed_since_probe = True
            return []
        if header.kind == Kind.HEARTBEAT:
            extra = header.extra or {}
            if extra.get("probe") and header.id == self.probe_id:
                self.reports.append(dict(extra, stage=header.stage))
            return []
        if header.pipeline != self.pipeline:
            return []  # a late answer to an abandoned call
        if header.kind == Kind.BYE:
            self.ended = True
            return []
        if header.kind != Kind.RESULT:
            return []
        errors = {e.offset: e for e in header.errors or ()}
        out: list[Delivery] = []
        for offset, payload in enumerate(payloads):
            info = errors.get(offset)
            error = None if info is None else info.to_exception()
            out.append(Delivery(payload, error, header.id + offset, header.stage, header.pipeline))
        self.received += len(out)
        return out

    def drive(self, timeout: float | None) -> Iterator[Delivery]:
        client = self.client
        push, dealer = client.sockets()
        session = client.session
        last_progress = time.monotonic()
        dealer.send_multipart(session.hello(last_progress))
        every_ms = int(session.heartbeat_interval_s * 1000)
        probe_at = None if timeout is None else max(timeout - client.probe_s, timeout / 2)
        try:
            while not self.done:
                self.fill(push)
                wait_ms = every_ms if self.probe_id is None else 50
                if dealer.poll(wait_ms, zmq.POLLIN):
                    for _ in range(256):
                        try:
                            frames = dealer.recv_multipart(zmq.NOBLOCK)
                        except zmq.Again:
                            break
                        deliveries = self.accept(frames)
                        if deliveries:
                            last_progress = time.monotonic()
                            self.probe_id = None
                            yield from deliveries
                        if self.done:
                            return
                now = time.monotonic()
                if session.beat_due(now):
                    dealer.send_multipart(session.hello(now))
                if timeout is None or probe_at is None:
                    continue
                quiet = now - last_progress
                if self.probe_id is None and quiet >= probe_at:
                    self.send_probe(push, dealer)
                if quiet >= timeout:
                    raise TimeoutError(self.explain(quiet))
        except TimeoutError:
            client.recycle()
            raise

    def probe_only(self, wait_s: float) -> list[dict[str, Any]]:
        push, dealer = self.client.sockets()
        self.send_probe(push, dealer)
        deadline = time.monotonic() + wait_s
        while (left := deadline - time.monotonic()) > 0:
            if dealer.poll(int(left * 1000) + 1, zmq.POLLIN):
                self.accept(dealer.recv_multipart())
                if _complete(self.reports):
                    break
        return sorted(self.reports, key=lambda r: r["stage"])

    # the timeout's message ---------------------------------------------------------

    def explain(self, quiet_s: float) -> str:
        client = self.client
        outstanding = self.sent - self.received
        head = (
            f"no result for {quiet_s:.1f} s from the chain starting at {client.server_name!r} "
            f"({outstanding} of {self.sent} job(s) of {self.function} outstanding): "
        )
        reports = sorted(self.reports, key=lambda r: r["stage"])
        answered = ", ".join(f"stage {r['stage']} {r.get('server')!r}" for r in reports)
        if not self.welcomed_since_probe:
            return head + (
                f"the last stage, which results come from at {client.push_address}, does not answer"
            )
        if not reports:
            return head + (
                f"stage 1 ({client.server_name!r} at {client.pull_address}) does not answer"
            )
        last = [r for r in reports if r.get("last")]
        if last:
            busy = [
                f"stage {r['stage']} {r.get('server')!r} has {r['workers']} worker(s) and "
                f"{r.get('queued', 0)} queued"
                for r in reports
                if "workers" in r and (r["workers"] == 0 or r.get("queued"))
            ]
            note = ("; " + "; ".join(busy)) if busy else ""
            return head + f"every stage answers ({answered}){note}"
        top = reports[-1]
        waiting = top.get("waiting")
        held = f" ({waiting} message(s) waiting for it)" if waiting else ""
        return head + (
            f"waiting for stage {top['stage'] + 1} ({top.get('next')}), which does not answer"
            f"{held}; stages answering: {answered}"
        )


def _complete(reports: list[dict[str, Any]]) -> bool:
    """Every stage up to one that returns to the client has reported."""
    last = [r["stage"] for r in reports if r.get("last")]
    if not last:
        return False
    stages = {r["stage"] for r in reports}
    return all(k in stages for k in range(1, min(last) + 1))
