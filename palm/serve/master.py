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
from collections import OrderedDict, deque
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field

import zmq

from palm.errors import ConfigError, PayloadTooLarge, ProtocolError
from palm.serve.loop import Poller, Sockets, header_from, routed_from, subscribe
from palm.serve.stopper import Stopper
from palm.serve.stream import (
    Message,
    StreamOut,
    StreamRouting,
    explode,
    function_for,
)
from palm.state.cache import Cache, MemoryCache
from palm.state.deployment import Deployment
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
    request_id_of,
)
from palm.wire.shipping import MAP_FUNCTION
from palm.wire.sockets import check_endpoint

__all__ = ["Master"]

#: Job ids a master gives the parts it scatters (far above any client's ids).
_PART_IDS_FROM = 1 << 60


@dataclass(slots=True)
class Job:
    """A message of one or more jobs as the master holds it."""

    client: bytes
    header: Header
    frames: list[bytes]  # [encoded header, payload, ...] exactly as received
    function: str = ""  # the bare function name, for picking workers
    received: float = 0.0  # monotonic time the master got it
    attempts: int = 0  # times handed to a worker
    deaths: int = 0  # times its worker died while running it
    worker: bytes | None = None

    @property
    def key(self) -> tuple[bytes, int]:
        return (self.client, self.header.id)


@dataclass(slots=True)
class WorkerInfo:
    identity: bytes
    credit: int
    last_seen: float
    pid: int = 0
    host: str = ""
    name: str = ""
    done: int = 0
    functions: frozenset[str] = frozenset()
    # jobs handed to this worker, in the order it runs them (a dict as an ordered set)
    inflight: dict[tuple[bytes, int], None] = field(default_factory=dict)


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
        redis_url: str | None = None,
        cluster: str | None = None,
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
        self.bound: dict[str, str] = {}
        self.ready = threading.Event()
        #: Called once every socket is bound (``bound`` holds the endpoints).
        self.on_ready: Callable[[Master], None] | None = None
        self.routes = StreamOut(name, self.next_address, next_call, pipelined, self.bound)

        # jobs waiting for a worker, one queue per function (workers may differ)
        self.queues: dict[str, deque[Job]] = {}
        self.queued = 0
        self.known_functions: set[str] = {MAP_FUNCTION}
        self.inflight: dict[tuple[bytes, int], Job] = {}
        self.workers: OrderedDict[bytes, WorkerInfo] = OrderedDict()
        self.stats = {"jobs_in": 0, "jobs_out": 0, "failed": 0, "requeued": 0, "duplicates": 0}
        # per pipeline: payloads in here not yet sent on, and end markers waiting for them
        self.pending: dict[bytes, int] = {}
        self.held_ends: dict[bytes, Header] = {}
        self._part_ids = itertools.count(_PART_IDS_FROM)
        klass = type(self)
        self._scatters = klass.scatter is not Master.scatter
        self._gathers = klass.gather is not Master.gather

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
        sockets = Sockets(f"master {self.name}", self.bound, self.max_message_bytes)
        feeder: _Feeder | None = None
        try:
            self.deployment.open()
            if self._cache is not None:
                self.cache = self._cache
            elif self.deployment.state is not None:
                self.cache = self.deployment.state
            poller = Poller(self._stopper.fd)
            self.worker_in = sockets.bind(
                zmq.PULL, self.worker_pull_address, "worker_pull", max_message_bytes=None
            )
            poller.add(self.worker_in, self._on_worker_result)
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
            poller.add(client_in, self._on_client_job)
            if self.upstreams:
                feeder = _Feeder(self, self.bound["pull"])
                feeder.start()
            self.logger.info("master %s up: %s", self.name, self.bound)
            self.ready.set()
            if self.on_ready is not None:
                self.on_ready(self)
            self._loop(poller, client_in)
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
        while not stopper.stopping:
            wait = max(0, int((next_beat - time.monotonic()) * 1000))
            poller.poll(min(wait, interval_ms))
            if self.queued:
                self._dispatch()
            now = time.monotonic()
            if now >= next_beat:
                self._heartbeat(now)
                next_beat = now + self.heartbeat_interval_s
            # jobs waiting and nobody to run them, or the next stage not taking
            # results: stop reading new ones for a while so memory stays
            # bounded (senders block on HWM).
            poller.pause(client_in, not self._window_open())

    def _window_open(self) -> bool:
        return self.queued < 100_000 and not self.routes.full

    def _welcome(self) -> dict[str, object]:
        """What a client's WELCOME carries besides the session."""
        return {"workers": len(self.workers), "interval_s": self.heartbeat_interval_s}

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
        header.stage += 1
        self._settle(header.pipeline, -(len(job.frames) - 1))
        if not (header.errors or self._scatters or " " in header.function):
            job.frames[0] = header.to_wire()
            self._enqueue(job)
            return
        for message in explode(header, job.frames[1:]):
            if message.error is not None:
                self._send_each([message])
                self._settle(message.pipeline, 1)
                continue
            parts = list(self.scatter(message)) if self._scatters else [message]
            self._settle(message.pipeline, 1 - len(parts))
            for part in parts:
                self._enqueue(self._job(part, message.id))

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
                header, workers=len(self.workers), queued=self.queued, inflight=len(self.inflight)
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
        count = job_count(job.header, len(job.frames) - 1)
        reply = job.header.reply()
        stage = job.header.stage
        reply.errors = [ErrorInfo(i, type_, message, "", self.name, stage) for i in range(count)]
        self.stats["failed"] += count
        self.counters.record_batch(
            job.function or "?", time.monotonic() - job.received, count, count
        )
        self._deliver(reply, [reply.to_wire(), *frames_for(reply, [b""] * count)])

    # workers -----------------------------------------------------------------

    def _enqueue(self, job: Job, front: bool = False) -> None:
        queue = self.queues.get(job.function)
        if queue is None:
            queue = self.queues[job.function] = deque()
        if front:
            queue.appendleft(job)
        else:
            queue.append(job)
        self.queued += 1

    def _dispatch(self) -> None:
        ready = [w for w in self.workers.values() if w.credit > 0]
        if not ready:
            return
        for function, queue in list(self.queues.items()):
            if not queue:
                del self.queues[function]
                continue
            if function == MAP_FUNCTION:
                workers = ready
            else:
                workers = [w for w in ready if function in w.functions]
                if not workers and function not in self.known_functions and self.workers:
                    self._unknown(function, queue)
                    continue
            self._hand_out(queue, workers)
            ready = [w for w in ready if w.credit > 0]
            if not ready:
                return

    def _hand_out(self, queue: deque[Job], workers: list[WorkerInfo]) -> None:
        i = 0
        while queue and workers:
            w = workers[i % len(workers)]
            job = queue.popleft()
            self.queued -= 1
            job.worker = w.identity
            job.attempts += 1
            self.inflight[job.key] = job
            w.inflight[job.key] = None
            w.credit -= 1
            try:
                self.worker_out.send_multipart([w.identity, *job.frames], zmq.NOBLOCK)
            except zmq.ZMQError:
                # the worker vanished under us: forget it, its jobs go back
                self._worker_dead(w, "unreachable")
                workers = [x for x in workers if x is not w]
                continue
            if w.credit <= 0:
                workers.remove(w)
                continue
            i += 1

    def _unknown(self, function: str, queue: deque[Job]) -> None:
        """No worker this master has seen knows ``function``: answer every job now."""
        known = ", ".join(sorted(self.known_functions - {MAP_FUNCTION})) or "(none)"
        message = f"no worker of {self.name!r} has function {function!r}; they have: {known}"
        while queue:
            self.queued -= 1
            self._answer_error(queue.popleft(), "palm.UnknownFunction", message)

    def _on_worker_control(self, frames: list[bytes]) -> None:
        message = routed_from(frames, self.malformed)
        if message is None:
            return
        identity, header, _ = message
        extra = header.extra or {}
        now = time.monotonic()
        if header.kind == Kind.READY:
            old = self.workers.pop(identity, None)
            if old is not None:
                self._requeue(old, died=False)
            credit = int(extra.get("credit", 1))
            raw = extra.get("functions")
            functions = (
                frozenset(f for f in raw if isinstance(f, str))
                if isinstance(raw, list)
                else frozenset()
            )
            self.known_functions |= functions
            self.workers[identity] = WorkerInfo(
                identity,
                credit,
                now,
                int(extra.get("pid", 0)),
                str(extra.get("host", "")),
                str(extra.get("name", "")),
                functions=functions,
            )
            self.counters.worker_seen(str(extra.get("name", "")) or identity.hex(), 0)
            self._send_worker(
                identity,
                control(Kind.WELCOME, identity, header.id, session=self.session, master=self.name),
            )
            self.logger.info(
                "worker %s joined (credit %d)", extra.get("name", identity.hex()), credit
            )
        elif header.kind in (Kind.HEARTBEAT, Kind.CREDIT):
            w = self.workers.get(identity)
            if w is None:
                # a worker we declared dead, or a master restart: ask it to re-register
                self._send_worker(
                    identity, control(Kind.WELCOME, identity, reset=True, session=self.session)
                )
                return
            w.last_seen = now
            if header.kind == Kind.CREDIT:
                w.credit += int(extra.get("credit", 1))
        elif header.kind == Kind.BYE:
            w = self.workers.get(identity)
            if w is not None:
                self._worker_dead(w, "left")
        else:
            self.malformed.record(f"unexpected {Kind.NAMES[header.kind]} from a worker")

    def _send_worker(self, identity: bytes, frames: list[bytes]) -> None:
        try:
            self.worker_out.send_multipart([identity, *frames], zmq.NOBLOCK)
        except zmq.ZMQError:
            pass

    def _on_worker_result(self, frames: list[bytes]) -> None:
        header = header_from(frames[0], self.malformed)
        if header is None:
            return
        extra = header.extra or {}
        wid = extra.get("w")
        now = time.monotonic()
        if header.kind == Kind.HEARTBEAT:
            w = self.workers.get(wid) if isinstance(wid, bytes) else None
            if w is not None:
                w.last_seen = now
            return
        if header.kind != Kind.RESULT:
            self.malformed.record(f"{Kind.NAMES.get(header.kind)} on the result socket")
            return
        key = (header.client, header.id)
        w = self.workers.get(wid) if isinstance(wid, bytes) else None
        if w is not None:
            w.last_seen = now
            w.credit += 1
            w.done += job_count(header, len(frames) - 1)
            w.inflight.pop(key, None)
        job = self.inflight.pop(key, None)
        if job is None:
            self.stats["duplicates"] += 1
            return
        if job.worker is not None and job.worker != wid:
            owner = self.workers.get(job.worker)
            if owner is not None:
                owner.inflight.pop(key, None)
        count = job_count(header, len(frames) - 1)
        failed = len(header.errors) if header.errors else 0
        self.stats["jobs_out"] += count
        self.stats["failed"] += failed
        self.counters.record_batch(job.function, time.monotonic() - job.received, count, failed)
        self._deliver(header, frames)

    def _deliver(self, header: Header, frames: list[bytes]) -> None:
        """Send a finished result on: to its client, the next stage or subscribers."""
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
        if self._gathers:
            messages = explode(header, payloads)
            self._send_each(out for message in messages for out in self.gather(message))
        else:
            self._send_on(header, payloads)
        self._settle(pipeline, len(payloads))

    def _heartbeat(self, now: float) -> None:
        deadline = self.heartbeat_interval_s * self.liveness
        for w in list(self.workers.values()):
            if now - w.last_seen > deadline:
                self._worker_dead(w, f"silent for {now - w.last_seen:.1f} s")
        if self.routes.outlet is not None:
            self.routes.outlet.expire(now)
        self.routes.flush()
        self.counters.set_backlog(self.queued)
        for w in self.workers.values():
            self.counters.worker_seen(w.name or w.identity.hex(), w.done)
        beat = control(Kind.HEARTBEAT, session=self.session)
        for identity in list(self.workers):
            self._send_worker(identity, beat)

    def _worker_dead(self, w: WorkerInfo, why: str) -> None:
        self.workers.pop(w.identity, None)
        self.counters.worker_lost(w.name or w.identity.hex())
        level = logging.INFO if why == "left" and not w.inflight else logging.WARNING
        self.logger.log(
            level,
            "worker %s (pid %s) is gone (%s); %d job message(s) go to other workers",
            w.name or w.identity.hex(),
            w.pid,
            why,
            len(w.inflight),
        )
        self._requeue(w, died=why != "left")

    def _requeue(self, w: WorkerInfo, died: bool = True) -> None:
        """Hand a gone worker's jobs to others.

        A worker runs its jobs in the order it got them, so only the oldest
        unfinished one can have been running when it died: that one counts a
        death (and fails for good after ``max_attempts``); the others only
        waited in its queue and go back as they were.
        """
        suspect = True
        requeue: list[Job] = []
        for key in list(w.inflight):
            job = self.inflight.pop(key, None)
            if job is None:
                continue
            self.stats["requeued"] += 1
            if suspect and died:
                job.deaths += 1
                suspect = False
                if job.deaths >= self.max_attempts:
                    self._answer_error(
                        job,
                        "palm.JobLost",
                        f"the job's worker died {job.deaths} times while running it; not retried",
                    )
                    continue
                requeue.extend(self._split(job))
            else:
                requeue.append(job)
        for job in reversed(requeue):
            self._enqueue(job, front=True)
        w.inflight.clear()

    def _split(self, job: Job) -> list[Job]:
        """A batch that took down its worker is retried one job at a time,
        so one poisonous job cannot sink its neighbours."""
        try:
            payloads = jobs_in(job.header, job.frames[1:])
        except ProtocolError:
            return [job]
        if len(payloads) == 1 and not job.header.packed:
            return [job]
        header = job.header
        extra = {k: v for k, v in (header.extra or {}).items() if k not in _REQUEST_IDS}
        parts: list[Job] = []
        for i, payload in enumerate(payloads):
            frames = job_message(
                job.client,
                header.id + i,
                header.function,
                [payload],
                extra=extra or None,
                request_ids=[_str_or_none(request_id_of(header.extra, i))],
                pipeline=header.pipeline,
                stage=header.stage,
                key=header.key,
            )
            part = Job(job.client, decode_header(frames[0]), frames, job.function, job.received)
            part.attempts, part.deaths = job.attempts, job.deaths
            parts.append(part)
        return parts

    # info --------------------------------------------------------------------

    def _info(self) -> ServiceInfo:
        """What INFO answers (a hook: subclasses add fields)."""
        return self._info_with(
            "master",
            functions=sorted(self.known_functions - {MAP_FUNCTION}),
            stats=dict(self.stats),
            workers=[
                {"name": w.name, "pid": w.pid, "host": w.host, "credit": w.credit, "done": w.done}
                for w in self.workers.values()
            ],
            queued=self.queued,
            inflight=len(self.inflight),
        )


_REQUEST_IDS = ("request_id", "request_ids")


def _str_or_none(value: object) -> str | None:
    return value if isinstance(value, str) else None


class _Feeder(threading.Thread):
    """Takes a master's input from upstream streams (a hub's subscriptions)
    and hands it to the master's own job socket."""

    def __init__(self, master: Master, inbox: str) -> None:
        super().__init__(name=f"palm-feeder-{master.name}", daemon=True)
        self.master = master
        self.inbox = inbox

    def run(self) -> None:
        master = self.master
        sockets = Sockets(master.name, {}, master.max_message_bytes)
        try:
            push = sockets.connect(zmq.PUSH, self.inbox)

            def forward(frames: list[bytes]) -> None:
                if len(frames) == 1 and _is_welcome(frames[0]):
                    return  # the upstream acknowledging the subscription
                push.send_multipart(frames)

            poller = Poller(master._stopper.fd)
            dealers = [sockets.subscriber(address) for address, _topic in master.upstreams]
            for dealer in dealers:
                poller.add(dealer, forward)
            topics = [topic for _address, topic in master.upstreams]
            interval_ms = max(1, int(master.heartbeat_interval_s * 1000))
            subscribe(dealers, topics, master.name)
            while not master._stopper.stopping:
                if not poller.poll(interval_ms):
                    subscribe(dealers, topics, master.name)
        finally:
            sockets.close()


def _is_welcome(frame: bytes) -> bool:
    try:
        return decode_header(frame).kind == Kind.WELCOME
    except ProtocolError:
        return False
