"""The master: fans jobs out to a pool of workers and sends their results on.

Sockets (every address a full ZeroMQ endpoint)::

    clients / previous stage --PUSH--> pull_address (PULL)   jobs in
    upstream's push_address (ROUTER) <-DEALER-                jobs in, by subscription (a hub)
    clients, subscribers <-DEALER- push_address (ROUTER)      results out, by client id or topic
    next_address (PULL of the next stage) <-PUSH-             results on (a chained stage)
    workers <-DEALER- worker_push_address (ROUTER)            jobs out, credit, heartbeats
    workers --PUSH--> worker_pull_address (PULL)              results in, worker heartbeats
    anyone  <-DEALER- db_address (ROUTER)                     cache, ping, info

A standalone master, a parallel stage of a chain, a parallel server of a
pipeline and a hub are all this one class: where results go is its
:class:`~palm.serve.stream.StreamOut` (back to their clients, to the next
stage, or to the subscribers of its stream). The master never decodes a
payload on the way to a worker. It keeps every job it handed to a worker
until that worker's result arrives; when a worker stops heartbeating its jobs
go to other workers, a job that took down its worker ``max_attempts`` times
comes back as a :class:`~palm.errors.JobLost` error, and a result that
arrives twice is dropped. Workers ask for jobs with credit, clients keep a
bounded window of jobs in flight, so memory stays bounded.

Each message that comes in counts one more ``stage``; three hooks shape the
stream, as generators or functions:

* ``scatter(message)`` turns one incoming message into any number of jobs;
* ``gather(message)`` sees every result and yields zero or more messages;
* ``handle_stream(message)`` says where a message goes (a topic, or None
  for its client).

When a subclass overrides none of them, messages go through whole batches
at a time and no per-payload object is made.
"""

from __future__ import annotations

import itertools
import logging
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from typing import Literal

import zmq

from palm.errors import ConfigError, PayloadTooLarge, ProtocolError
from palm.serve.auth import Refusals
from palm.serve.dispatch import Dispatcher, Job, WorkerInfo
from palm.serve.loop import Feeder, HandlerGuard, Poller, Sockets, header_from, routed_from
from palm.serve.stopper import Stopper
from palm.serve.stream import (
    Message,
    StreamOut,
    StreamRouting,
    explode,
    function_for,
    hook_failed,
)
from palm.state.cache import Cache, MemoryCache
from palm.state.deployment import Deployment, StateOrMemory
from palm.wire.arena import SHARED_KEY, UNREADABLE, resolve
from palm.wire.control import Credit, Ready, ResultMeta, announced_jobs
from palm.wire.info import ServiceInfo
from palm.wire.messages import control, job_message
from palm.wire.protocol import (
    DEFAULT_MAX_MESSAGE_BYTES,
    ErrorInfo,
    Header,
    Kind,
    MalformedCounter,
    check_size,
    decode_header,
    frames_for,
    job_count,
    jobs_in,
)
from palm.wire.security import KeysOption, security_for
from palm.wire.shipping import MAP_FUNCTION
from palm.wire.sockets import as_bytes, check_endpoint, recv_forwarded, send_frames

__all__ = ["Master"]

#: Most mapped functions the counters name apart (workers report them); more count as __map__.
MAX_MAP_NAMES = 64
#: Most clients whose last-told worker count a master keeps (the oldest told is forgotten).
MAX_TOLD_CLIENTS = 10_000

_NOBLOCK = int(zmq.NOBLOCK)

#: Job ids a master gives the parts it scatters (far above any client's ids).
_PART_IDS_FROM = 1 << 60


class Master(StreamRouting):
    """A master. ``start()`` serves until SIGINT/SIGTERM or ``stop()``.

    Jobs come in at ``pull_address`` or from ``upstreams`` (``(address,
    topic)`` pairs: the upstreams' push addresses and the streams taken);
    results go out at ``push_address`` (to clients, or to subscribers when
    ``pipelined``) or to ``next_address`` calling ``next_call``.

    With ``palm=True`` the master serves as soon as it is built
    (:meth:`start_background`), in a thread that keeps the process alive,
    so a script that only builds it is a running master; ``start()`` then
    waits for it.
    """

    def __init__(
        self,
        name: str,
        pull_address: str | None,
        push_address: str | None,
        worker_pull_address: str,
        worker_push_address: str,
        db_address: str | None = None,
        palm: bool = False,
        *,
        upstreams: Sequence[tuple[str, str]] = (),
        next_address: str | None = None,
        next_call: str | None = None,
        pipelined: bool = False,
        subscribers: int = 1,
        heartbeat_interval_s: float = 1.0,
        liveness: int = 3,
        max_attempts: int = 3,
        max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES,
        cache: Cache | None = None,
        pending_results_per_client: int = 100_000,
        redis_url: str | Literal[False] | None = None,
        cluster: str | None = None,
        keys: KeysOption = None,
    ) -> None:
        if not isinstance(name, str) or not name or "." in name:
            raise ConfigError(f"master name must be non-empty and without dots, got {name!r}")
        if pull_address is None and not upstreams:
            raise ConfigError(f"master {name!r} needs a pull_address or upstream streams")
        if next_address is None and push_address is None:
            raise ConfigError(f"master {name!r} needs a next_address or a push_address")
        if next_address is not None and not next_call:
            raise ConfigError(f"master {name!r} has a next_address but no next_call")
        self.name = name
        self.pull_address = check_endpoint(pull_address, "pull_address") if pull_address else None
        self.push_address = check_endpoint(push_address, "push_address") if push_address else None
        self.worker_pull_address = check_endpoint(worker_pull_address, "worker_pull_address")
        self.worker_push_address = check_endpoint(worker_push_address, "worker_push_address")
        self.db_address = check_endpoint(db_address, "db_address") if db_address else None
        self.upstreams = [(check_endpoint(a, "upstream address"), t) for a, t in upstreams]
        self.next_address = check_endpoint(next_address, "next_address") if next_address else None
        self.next_call = next_call
        self.pipelined = pipelined
        self.subscribers = subscribers
        self.heartbeat_interval_s = heartbeat_interval_s
        self.liveness = liveness
        self.max_attempts = max_attempts
        self.max_message_bytes = max_message_bytes
        self._cache = cache
        self.cache: Cache = MemoryCache()
        self.deployment = Deployment(name, redis_url=redis_url, cluster=cluster, start_redis=True)
        self.counters = self.deployment.counters
        self.pending_results_per_client = pending_results_per_client
        self.undelivered_ttl_s = 300.0
        self.session = uuid.uuid4().hex[:12]

        self.logger = logging.getLogger(f"palm.{name}")
        self.malformed = MalformedCounter(name, self.logger)
        #: what the loop caught of exceptions no handler foresaw
        self.failures = HandlerGuard(f"master {name}", self.logger)
        #: CURVE for every socket (``keys=`` or PALM_KEYS; None: plain)
        self.security = security_for(keys, "stage")
        self.refusals = Refusals(f"master {name}", self.logger)
        self.bound: dict[str, str] = {}
        self.ready = threading.Event()
        #: Called once every socket is bound (``bound`` holds the endpoints).
        self.on_ready: Callable[[Master], None] | None = None
        self.routes = StreamOut(name, self.next_address, next_call, pipelined, self.bound)

        self.stats = {"jobs_in": 0, "jobs_out": 0, "failed": 0, "requeued": 0, "duplicates": 0}
        #: the mapped functions' names the counters list (at most MAX_MAP_NAMES)
        self._map_names: set[str] = set()
        #: the worker count each client's last WELCOME told it (bounded, oldest first)
        self._told: dict[bytes, int] = {}
        #: the workers and the jobs they hold (see :mod:`palm.serve.dispatch`)
        self.pool = Dispatcher(
            name,
            max_attempts=max_attempts,
            send=self._hand_to,
            fail=self._answer_error,
            counters=self.counters,
            stats=self.stats,
            logger=self.logger,
        )
        # per pipeline: payloads in here not yet sent on, and end markers waiting for them
        self.pending: dict[bytes, int] = {}
        self.held_ends: dict[bytes, Header] = {}
        self._part_ids = itertools.count(_PART_IDS_FROM)
        klass = type(self)
        self._scatters = klass.scatter is not Master.scatter
        self._gathers = klass.gather is not Master.gather
        # results go straight back to clients, no hook in between: messages
        # without a pipeline pass through as they came (no re-encoding)
        self._forwards = not (
            next_address
            or pipelined
            or upstreams
            or self._scatters
            or self._gathers
            or klass.handle_stream is not StreamRouting.handle_stream
        )

        self._stopper = Stopper()
        self._thread: threading.Thread | None = None
        if palm:
            self.start_background()

    # hooks -------------------------------------------------------------------

    def scatter(self, message: Message) -> Iterator[Message]:
        """Turn one incoming message into jobs for the workers (default: itself)."""
        yield message

    def gather(self, message: Message) -> Iterator[Message]:
        """See one result; yield what goes on (default: the result itself)."""
        yield message

    # lifecycle ---------------------------------------------------------------

    def start_background(self) -> None:
        """Serve in a background thread, returning once the sockets are bound.

        What ``palm=True`` does. No signal handler is installed here:
        :meth:`stop` ends the thread (and returns once it has closed
        everything), :meth:`start` waits for it and stops it on SIGINT/SIGTERM,
        and a script that never calls ``start()`` calls it as the interpreter
        exits (before waiting for the thread), so such a script is a master
        that stops cleanly on a signal.
        """
        if self._thread is not None and self._thread.is_alive():
            raise ConfigError(f"master {self.name!r} is already serving in the background")
        self.ready.clear()
        self._thread = threading.Thread(target=self._run, name=f"palm-master-{self.name}")
        self._thread.start()
        if threading.current_thread() is threading.main_thread():
            register = getattr(threading, "_register_atexit", None)
            if register is not None:
                register(self._wait_at_exit)
        self.ready.wait(10)

    def _wait_at_exit(self) -> None:
        thread = self._thread
        if thread is not None and thread.is_alive():
            self.start()

    def start(self) -> None:
        """Serve until SIGINT/SIGTERM or :meth:`stop` (or wait for the background master)."""
        with self._stopper.on_signals():
            thread = self._thread
            if thread is not None:
                while thread.is_alive():
                    thread.join(0.2)
                return
            self._run()

    def stop(self) -> None:
        """Ask the master to stop; it closes its sockets and ``start()`` returns.

        A background master (:meth:`start_background`) is waited for.
        """
        self._stopper.stop()
        thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(10)

    # the loop ----------------------------------------------------------------

    def _run(self) -> None:
        sockets = Sockets(
            f"master {self.name}",
            self.bound,
            self.max_message_bytes,
            security=self.security,
            refusals=self.refusals,
        )
        feeder: Feeder | None = None
        try:
            # Redis (an embedded one starts in a tenth of a second) opens while
            # the master binds and serves; cache calls wait for it
            self.deployment.open(background=True)
            self.cache = self._cache if self._cache is not None else StateOrMemory(self.deployment)
            poller = Poller(self._stopper.fd, self.failures)
            self.worker_in = sockets.bind(
                zmq.PULL, self.worker_pull_address, "worker_pull", max_message_bytes=None
            )
            poller.add(self.worker_in, self._on_worker_result, receive=recv_forwarded)
            self.worker_out = sockets.bind(
                zmq.ROUTER, self.worker_push_address, "worker_push", max_message_bytes=None
            )
            self.worker_out.setsockopt(zmq.ROUTER_MANDATORY, 1)
            poller.add(self.worker_out, self._on_worker_control)
            self._open_outputs(
                sockets,
                poller,
                park_limit=self.pending_results_per_client,
                park_ttl_s=self.undelivered_ttl_s,
                welcome=self._welcome,
            )
            pull = self.pull_address or f"inproc://palm-{self.name}-{uuid.uuid4().hex}-in"
            client_in = sockets.bind(zmq.PULL, pull, "pull")
            poller.add(client_in, self._on_client_job, receive=recv_forwarded)
            if self.upstreams:
                feeder = Feeder(
                    self.name,
                    self.upstreams,
                    self.bound["pull"],
                    self._stopper,
                    self.heartbeat_interval_s,
                    self.max_message_bytes,
                    self.security,
                )
                feeder.start()
            self.logger.info("master %s up: %s", self.name, self.bound)
            self.ready.set()
            if self.on_ready is not None:
                self.on_ready(self)
            self._loop(poller, client_in)
            self._farewell()
        finally:
            if feeder is not None:
                feeder.join(5)
            sockets.close()
            self.routes.close()
            self._stopper.close()
            self._stopper = Stopper()
            self.deployment.close()
            self.ready.set()
            self.logger.info("master %s stopped", self.name)

    def _loop(self, poller: Poller, client_in: zmq.Socket[bytes]) -> None:
        interval_ms = max(1, int(self.heartbeat_interval_s * 1000))
        next_beat = time.monotonic() + self.heartbeat_interval_s
        stopper = self._stopper
        worker_in, worker_out = self.worker_in, self.worker_out
        # when the loop last found nothing left to read from its workers: what
        # they sent before then has been read, so their silence is real
        read_at = time.monotonic()
        closed = False  # whether new jobs are left unread for now (see below)
        while not stopper.stopping:
            wait = max(0, int((next_beat - time.monotonic()) * 1000))
            poller.poll(min(wait, interval_ms))
            if self.pool.queued:
                self.pool.dispatch()
            now = time.monotonic()
            if poller.read_to_end(worker_in, worker_out):
                read_at = poller.polled_at
            if now >= next_beat:
                self._heartbeat(now, read_at, late_s=now - next_beat)
                next_beat = now + self.heartbeat_interval_s
            # jobs waiting and nobody to run them, or the next stage not taking
            # results: stop reading new ones for a while so memory stays
            # bounded (senders block on HWM). The poller hears only of changes.
            if closed == self._window_open():
                closed = not closed
                poller.pause(client_in, closed)

    def _window_open(self) -> bool:
        return self.pool.queued < 100_000 and not self.routes.full

    def _welcome(self, identity: bytes) -> dict[str, object]:
        """What a client's WELCOME carries besides the session (the worker count it
        tells is remembered: see :meth:`_tell_news`)."""
        workers = len(self.pool.workers)
        told = self._told
        told.pop(identity, None)
        told[identity] = workers
        while len(told) > MAX_TOLD_CLIENTS:
            del told[next(iter(told))]
        return {"workers": workers, "interval_s": self.heartbeat_interval_s}

    def _tell_news(self, client: bytes) -> None:
        """A WELCOME ahead of a result to a client whose last one told another worker
        count: ``map`` sizes its chunks for the workers there are, and a client
        welcomed while workers were still joining would otherwise plan for fewer
        until its next HELLO, a heartbeat interval later."""
        outlet = self.routes.outlet
        if outlet is not None:
            more = self._welcome(client)
            outlet.to_client(client, control(Kind.WELCOME, client, 0, session=self.session, **more))

    # jobs in -----------------------------------------------------------------

    def _on_client_job(self, frames: list[bytes]) -> None:
        header = header_from(frames[0], self.malformed)
        if header is None:
            return
        if header.kind != Kind.JOB or len(frames) < 2:
            self._on_stream_control(header)
            return
        job = Job(
            header.client, header, frames, header.function.rpartition(".")[2], time.monotonic()
        )
        uncountable = _uncountable(header, frames)
        if uncountable is not None:
            # no worker could read it either: answered here, never queued
            self.malformed.record(uncountable)
            header.stage += 1
            self._settle(header.pipeline, -1)  # answered with one error: see announced_jobs
            self._answer_error(job, "palm.ProtocolError", f"{self.name}: {uncountable}")
            return
        try:
            check_size(frames, self.max_message_bytes)
        except PayloadTooLarge as exc:
            # refused on the way in: it counts as this stage's, pending until answered
            header.stage += 1
            self._settle(header.pipeline, -(len(frames) - 1))
            self._answer_error(job, "palm.PayloadTooLarge", str(exc))
            return
        self.stats["jobs_in"] += job_count(header, len(frames) - 1)
        self._accept(job)

    def _accept(self, job: Job) -> None:
        """Queue a job that came in, scattered or routed as the hooks say."""
        header = job.header
        if self._forwards and header.pipeline is None and not header.errors:
            # a client's job for a master that answers its clients: as it came
            self.pool.enqueue(job)
            return
        job.frames = as_bytes(job.frames)  # payloads may go to hooks: bytes, not views
        if header.extra and SHARED_KEY in header.extra and not self._shared_read(job):
            return
        header.stage += 1
        self._settle(header.pipeline, -(len(job.frames) - 1))
        if not (header.errors or self._scatters or " " in header.function):
            job.frames[0] = header.to_wire()
            self.pool.enqueue(job)
            return
        for message in explode(header, job.frames[1:]):
            if message.error is not None:
                self._send_each([message])
                self._settle(message.pipeline, 1)
                continue
            parts = self._scattered(message) if self._scatters else [message]
            if parts is None:  # the hook failed: the message goes on as an error
                continue
            self._settle(message.pipeline, 1 - len(parts))
            for part in parts:
                self.pool.enqueue(self._job(part, message.id))

    def _shared_read(self, job: Job) -> bool:
        """Read the payloads a client left in its shared-memory arena
        (:mod:`palm.wire.arena`) into ``job``, for the hooks and the stages that read
        them; False when they cannot be read (the client hears so, and sends them
        again inline)."""
        header = job.header
        try:
            payloads = resolve(
                header.extra, jobs_in(header, job.frames[1:]), self.max_message_bytes
            )
        except ProtocolError as exc:
            header.stage += 1
            self._settle(header.pipeline, -(len(job.frames) - 1))
            self._answer_error(job, UNREADABLE, f"{self.name} could not read the job: {exc}")
            return False
        header.packed = 0
        job.frames = [job.frames[0], *payloads]
        return True

    def _scattered(self, message: Message) -> list[Message] | None:
        """The parts ``scatter`` makes of ``message``; None when the hook failed
        (then ``message`` went on as an error)."""
        try:
            parts = list(self.scatter(message))
            for part in parts:
                if not isinstance(part, Message):
                    raise TypeError(f"scatter yielded a {type(part).__name__}, not a Message")
        except Exception as exc:  # the user's hook: this message fails, the master goes on
            self._send_each([hook_failed(self, "scatter", message, exc)])
            self._settle(message.pipeline, 1)
            return None
        return parts

    def _gathered(self, messages: list[Message]) -> Iterator[Message]:
        """What ``gather`` makes of each result; a failed hook's message as an error."""
        for message in messages:
            try:
                out = list(self.gather(message))
                for item in out:
                    if not isinstance(item, Message):
                        raise TypeError(f"gather yielded a {type(item).__name__}, not a Message")
            except Exception as exc:  # the user's hook: this result fails, the master goes on
                out = [hook_failed(self, "gather", message, exc)]
            yield from out

    def _job(self, part: Message, origin: int) -> Job:
        """The job for one part of an incoming message."""
        extra = dict(part.extra or {})
        if " " in part.function:
            extra["route"] = part.function
            part.function = function_for(part.function, self.name) or part.function.split()[0]
        if self._scatters:
            extra["of"] = origin
            part.id = next(self._part_ids)
        frames = job_message(
            part.client,
            part.id,
            part.function,
            [part.payload],
            extra=extra or None,
            pipeline=part.pipeline,
            stage=part.stage,
            key=part.cache,
        )
        header = decode_header(frames[0])
        return Job(part.client, header, frames, part.function.rpartition(".")[2])

    def _on_stream_control(self, header: Header) -> None:
        """A probe or an end marker on the job socket."""
        header.stage += 1
        if header.kind == Kind.PING:
            self.routes.probe(
                header,
                workers=len(self.pool.workers),
                queued=self.pool.queued,
                inflight=len(self.pool.inflight),
            )
        elif header.kind == Kind.BYE and header.pipeline is not None:
            if self.pending.get(header.pipeline, 0) > 0:
                self.held_ends[header.pipeline] = header
            else:
                self.routes.end(header)
        else:
            self.malformed.record(f"{Kind.NAMES.get(header.kind)} on the job socket")

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
            self.routes.end(held)

    def _answer_error(self, job: Job, type_: str, message: str) -> None:
        count = announced_jobs(job.header, job.frames[1:])
        reply = job.header.reply()
        reply.packed = count if reply.packed and count > 1 else 0
        stage = job.header.stage
        reply.errors = [ErrorInfo(i, type_, message, "", self.name, stage) for i in range(count)]
        self.stats["failed"] += count
        self.counters.record_batch(
            job.function or "?", time.monotonic() - job.received, count, count
        )
        self._deliver(reply, [reply.to_wire(), *frames_for(reply, [b""] * count)])

    # workers -----------------------------------------------------------------

    def _hand_to(self, identity: bytes, frames: list[bytes]) -> bool:
        """Send a job to a worker; False when the worker is not connected."""
        try:
            send_frames(self.worker_out, [identity, *frames], _NOBLOCK)
        except zmq.ZMQError:
            return False
        return True

    def _on_worker_control(self, frames: list[bytes]) -> None:
        message = routed_from(frames, self.malformed)
        if message is None:
            return
        identity, header, _ = message
        now = time.monotonic()
        if header.kind == Kind.READY:
            try:
                ready = Ready.from_header(header)
            except ProtocolError as exc:
                self.malformed.record(f"READY: {exc}")
                return
            self.pool.join(
                WorkerInfo(
                    identity,
                    ready.credit,
                    now,
                    ready.pid,
                    ready.host,
                    ready.name,
                    functions=ready.functions,
                )
            )
            self._send_worker(
                identity,
                control(Kind.WELCOME, identity, header.id, session=self.session, master=self.name),
            )
            self.logger.info(
                "worker %s joined (credit %d)", ready.name or identity.hex(), ready.credit
            )
        elif header.kind in (Kind.HEARTBEAT, Kind.CREDIT):
            try:
                credit = Credit.from_header(header).credit
            except ProtocolError as exc:
                self.malformed.record(f"CREDIT: {exc}")
                return
            if not self.pool.seen(identity, now, credit):
                # a worker we declared dead, or a master restart: ask it to re-register
                self._send_worker(
                    identity, control(Kind.WELCOME, identity, reset=True, session=self.session)
                )
        elif header.kind == Kind.BYE and (header.extra or {}).get("leave") is True:
            # the BYE answering it goes after every job sent to this worker
            self.pool.leaving(identity)
            self._send_worker(identity, control(Kind.BYE, identity))
        elif header.kind == Kind.BYE:
            self.pool.left(identity)
        else:
            self.malformed.record(f"unexpected {Kind.NAMES[header.kind]} from a worker")

    def _farewell(self) -> None:
        """Tell every worker this master stops (a BYE), so none waits for it:
        a leaving worker takes it for the answer to its leave, the others
        register again when a master is back."""
        for identity in list(self.pool.workers):
            self._send_worker(identity, control(Kind.BYE, identity))
        self.worker_out.close(linger=200)

    def _send_worker(self, identity: bytes, frames: list[bytes]) -> None:
        try:
            self.worker_out.send_multipart([identity, *frames], zmq.NOBLOCK)
        except zmq.ZMQError:
            pass

    def _on_worker_result(self, frames: list[bytes]) -> None:
        header = header_from(frames[0], self.malformed)
        if header is None:
            return
        now = time.monotonic()
        if header.kind not in (Kind.RESULT, Kind.HEARTBEAT, Kind.BYE):
            self.malformed.record(f"{Kind.NAMES.get(header.kind)} on the result socket")
            return
        try:
            meta = ResultMeta.from_header(header)
        except ProtocolError as exc:
            self.malformed.record(f"{Kind.NAMES[header.kind]} from a worker: {exc}")
            return
        if header.kind == Kind.HEARTBEAT:
            if meta.worker is not None:
                self.pool.seen(meta.worker, now)
            return
        if header.kind == Kind.BYE:  # a leaving worker's goodbye, behind its last result
            if meta.worker is not None:
                self.pool.left(meta.worker)
            return
        count = job_count(header, len(frames) - 1)
        # A worker that could not read a job answers it with palm.ProtocolError
        # errors: like any result, that retires the job (it is not handed out again).
        job = self.pool.finished(
            (header.client, header.id), meta.worker, count, now, meta.credit_back
        )
        if job is None:
            return
        failed = len(header.errors) if header.errors else min(meta.map_failed, count)
        # a map job counts under the user's function the worker ran, not under __map__
        function = job.function
        if function == MAP_FUNCTION and meta.map_function:
            named = self._map_names
            if meta.map_function in named or len(named) < MAX_MAP_NAMES:
                named.add(meta.map_function)
                function = meta.map_function
        self.stats["jobs_out"] += count
        self.stats["failed"] += failed
        self.counters.record_batch(function, time.monotonic() - job.received, count, failed)
        self._deliver(header, frames)

    def _deliver(self, header: Header, frames: list[bytes]) -> None:
        """Send a finished result on: to its client, the next stage or subscribers."""
        told = self._told.get(header.client)
        if told is not None and told != len(self.pool.workers):
            self._tell_news(header.client)
        if self._forwards and header.pipeline is None and not header.errors:
            # the result of a client's job, as the worker sent it
            outlet = self.routes.outlet
            assert outlet is not None
            self.routes.sent += len(frames) - 1
            outlet.to_client(header.client, frames)
            return
        payloads = as_bytes(frames[1:])  # they may go to hooks: bytes, not views
        settled = len(payloads)
        extra = header.extra
        if extra is not None:
            extra.pop("w", None)
            extra.pop("nc", None)
            route = extra.pop("route", None)
            if isinstance(route, str):
                header.function = route
            jobs = extra.pop("mux", None)  # a MuxWorker's results: many for one job
            if isinstance(jobs, int) and not isinstance(jobs, bool):
                settled = jobs
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
        if self._gathers:
            self._send_each(self._gathered(explode(header, payloads)))
        else:
            self._send_on(header, payloads)
        self._settle(pipeline, settled)

    def _heartbeat(self, now: float, read_at: float | None = None, late_s: float = 0.0) -> None:
        """Judge the workers, expire parked results, flush, count, and beat.

        ``read_at`` is when the loop last read its worker sockets to the end
        (default ``now``); ``late_s`` how far past its time this heartbeat
        runs. A loop late by more than an interval was stalled (a slow hook,
        a paused process): its workers get a fresh interval to be heard.
        """
        interval = self.heartbeat_interval_s
        self.pool.expire(
            now,
            interval * self.liveness,
            read_at=read_at,
            grace_s=interval if late_s > interval else 0.0,
        )
        if self.routes.outlet is not None:
            self.routes.outlet.expire(now)
        self.routes.flush()
        self.counters.set_backlog(self.pool.queued)
        for w in self.pool.workers.values():
            self.counters.worker_seen(w.label, w.done, host=w.host, pid=w.pid, busy=len(w.inflight))
        beat = control(Kind.HEARTBEAT, session=self.session)
        for identity in list(self.pool.workers):
            self._send_worker(identity, beat)

    # info --------------------------------------------------------------------

    def _info(self) -> ServiceInfo:
        """What INFO answers (a hook: subclasses add fields)."""
        return self._info_with(
            "master",
            functions=sorted(self.pool.known_functions - {MAP_FUNCTION}),
            stats=dict(self.stats),
            workers=[
                {
                    "name": w.name,
                    "pid": w.pid,
                    "host": w.host,
                    "credit": w.credit,
                    "done": w.done,
                    "leaving": w.leaving,
                }
                for w in self.pool.workers.values()
            ],
            queued=self.pool.queued,
            inflight=len(self.pool.inflight),
        )


def _uncountable(header: Header, frames: list[bytes]) -> str | None:
    """Why the jobs of a JOB message cannot even be counted, or None when they can.

    A packed message has one payload frame, and no more jobs than that
    frame has bytes (each packed job takes some); a worker could not read
    anything else.
    """
    if header.packed:
        if len(frames) != 2:
            return f"a packed job message with {len(frames) - 1} payload frames"
        if header.packed > len(frames[1]):
            return f"{header.packed} jobs packed in {len(frames[1])} bytes"
    return None
