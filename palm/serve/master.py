"""The parallel master: fans jobs out to a pool of workers, streams results back.

Sockets (every address a full ZeroMQ endpoint)::

    clients --PUSH--> pull_address (PULL)           jobs in
    clients <-DEALER- push_address (ROUTER)         results out, by client id
    workers <-DEALER- worker_push_address (ROUTER)  jobs out, credit, heartbeats
    workers --PUSH--> worker_pull_address (PULL)    results in, worker heartbeats
    anyone  <-DEALER- db_address (ROUTER)           cache, ping, info

The master never decodes a payload. It keeps every job it handed to a worker
until that worker's result arrives; when a worker stops heartbeating its jobs
go to other workers, a job that took down its worker ``max_attempts`` times
comes back as a :class:`~palm.errors.JobLost` error, and a result that
arrives twice is dropped. Workers ask for jobs with credit, clients keep a
bounded window of jobs in flight, so memory stays bounded.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
import uuid
from collections import OrderedDict, deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

import msgpack
import zmq

from palm.errors import PayloadTooLarge, ProtocolError
from palm.serve.db_endpoint import DbEndpoint
from palm.serve.service import Stopper
from palm.state.cache import Cache, MemoryCache
from palm.state.deployment import Deployment
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
    job_count,
    jobs_in,
)
from palm.wire.shipping import MAP_FUNCTION
from palm.wire.sockets import bound_endpoint, check_endpoint, make_socket

__all__ = ["Master"]

#: Messages drained from one socket per poll before looking at the others.
DRAIN = 512


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


class Master:
    """A parallel master. ``start()`` serves until SIGINT/SIGTERM or ``stop()``.

    With ``palm=True`` the master starts serving as soon as it is built, in a
    background thread that keeps the process alive (so a script that only
    builds it is a running master); ``start()`` then waits for it.
    """

    def __init__(
        self,
        name: str,
        pull_address: str,
        push_address: str,
        worker_pull_address: str,
        worker_push_address: str,
        db_address: str | None = None,
        palm: bool = False,
        *,
        heartbeat_interval_s: float = 1.0,
        liveness: int = 3,
        max_attempts: int = 3,
        max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES,
        cache: Cache | None = None,
        pending_results_per_client: int = 100_000,
        redis_url: str | Literal[False] | None = None,
        cluster: str | None = None,
    ) -> None:
        if not name or "." in name:
            raise ValueError(f"master name must be non-empty and without dots, got {name!r}")
        self.name = name
        self.pull_address = check_endpoint(pull_address, "pull_address")
        self.push_address = check_endpoint(push_address, "push_address")
        self.worker_pull_address = check_endpoint(worker_pull_address, "worker_pull_address")
        self.worker_push_address = check_endpoint(worker_push_address, "worker_push_address")
        self.db_address = check_endpoint(db_address, "db_address") if db_address else None
        self.heartbeat_interval_s = heartbeat_interval_s
        self.liveness = liveness
        self.max_attempts = max_attempts
        self.max_message_bytes = max_message_bytes
        self._cache = cache
        self.cache: Cache = MemoryCache()
        self.deployment = Deployment(name, redis_url=redis_url, cluster=cluster, start_redis=True)
        self.counters = self.deployment.counters
        self.pending_results_per_client = pending_results_per_client
        self.session = uuid.uuid4().hex[:12]

        self.logger = logging.getLogger(f"palm.{name}")
        self.malformed = MalformedCounter(name, self.logger)
        self.bound: dict[str, str] = {}
        self.ready = threading.Event()
        #: Called once every socket is bound (``bound`` holds the endpoints).
        self.on_ready: Callable[[Master], None] | None = None

        # state
        # jobs waiting for a worker, one queue per function (workers may differ)
        self.queues: dict[str, deque[Job]] = {}
        self.queued = 0
        self.known_functions: set[str] = {MAP_FUNCTION}
        self.inflight: dict[tuple[bytes, int], Job] = {}
        self.workers: OrderedDict[bytes, WorkerInfo] = OrderedDict()
        self.undelivered: dict[bytes, deque[list[bytes]]] = {}
        self.undelivered_since: dict[bytes, float] = {}
        self.undelivered_ttl_s = 300.0
        self.stats = {"jobs_in": 0, "jobs_out": 0, "failed": 0, "requeued": 0, "duplicates": 0}

        self._stopper = Stopper()
        self._thread: threading.Thread | None = None
        if palm:
            self._start_background()

    # lifecycle ---------------------------------------------------------------

    def _join_deployment(self) -> None:
        """Open Redis (starting the embedded one if none is configured): cache, logs, counters."""
        self.deployment.open()
        if self._cache is not None:
            self.cache = self._cache
        elif self.deployment.state is not None:
            self.cache = self.deployment.state

    def _start_background(self) -> None:
        self._join_deployment()
        self._thread = threading.Thread(target=self._run, name=f"palm-master-{self.name}")
        self._thread.start()
        if threading.current_thread() is threading.main_thread():
            import signal

            def handler(signum: int, frame: object) -> None:
                self.stop()

            signal.signal(signal.SIGINT, handler)
            signal.signal(signal.SIGTERM, handler)
        self.ready.wait(10)

    def start(self) -> None:
        """Serve until stopped (or wait for the background master started by ``palm=True``)."""
        if self._thread is not None:
            while self._thread.is_alive():
                self._thread.join(0.2)
            return
        self._join_deployment()
        with self._stopper.on_signals():
            self._run()

    def stop(self) -> None:
        """Ask the master to stop; it closes its sockets and ``start()`` returns."""
        self._stopper.stop()

    # the loop ----------------------------------------------------------------

    def _bind(self, kind: int, address: str, label: str, **opts: Any) -> zmq.Socket[bytes]:
        sock = make_socket(kind, **opts)
        try:
            sock.bind(address)
        except zmq.ZMQError as exc:
            sock.close(0)
            raise OSError(f"master {self.name} cannot bind {label} {address}: {exc}") from exc
        self.bound[label] = bound_endpoint(sock)
        return sock

    def _run(self) -> None:
        sockets: list[zmq.Socket[bytes]] = []
        try:
            limit = self.max_message_bytes
            self.client_in = self._bind(
                zmq.PULL, self.pull_address, "pull", max_message_bytes=limit
            )
            sockets.append(self.client_in)
            self.client_out = self._bind(zmq.ROUTER, self.push_address, "push")
            self.client_out.setsockopt(zmq.ROUTER_MANDATORY, 1)
            # a client that reconnects with a fresh socket (same identity) takes over
            self.client_out.setsockopt(zmq.ROUTER_HANDOVER, 1)
            sockets.append(self.client_out)
            self.worker_out = self._bind(zmq.ROUTER, self.worker_push_address, "worker_push")
            self.worker_out.setsockopt(zmq.ROUTER_MANDATORY, 1)
            sockets.append(self.worker_out)
            self.worker_in = self._bind(zmq.PULL, self.worker_pull_address, "worker_pull")
            sockets.append(self.worker_in)
            self.db: zmq.Socket[bytes] | None = None
            if self.db_address:
                self.db = self._bind(zmq.ROUTER, self.db_address, "db", max_message_bytes=limit)
                sockets.append(self.db)
                self._db_endpoint = DbEndpoint(
                    self.db, self.name, self.cache, self.describe, self.malformed, limit
                )
            self.logger.info("master %s up: %s", self.name, self.bound)
            self.ready.set()
            if self.on_ready is not None:
                self.on_ready(self)
            self._loop()
        finally:
            for sock in sockets:
                sock.close(0)
            self._stopper.close()
            self.deployment.close()
            self.ready.set()
            self.logger.info("master %s stopped", self.name)

    def _loop(self) -> None:
        poller = zmq.Poller()
        poller.register(self.client_in, zmq.POLLIN)
        poller.register(self.client_out, zmq.POLLIN)
        poller.register(self.worker_out, zmq.POLLIN)
        poller.register(self.worker_in, zmq.POLLIN)
        if self.db is not None:
            poller.register(self.db, zmq.POLLIN)
        poller.register(self._stopper.fd, zmq.POLLIN)
        interval_ms = max(1, int(self.heartbeat_interval_s * 1000))
        next_beat = time.monotonic() + self.heartbeat_interval_s
        stopper = self._stopper
        while not stopper.stopping:
            wait = max(0, int((next_beat - time.monotonic()) * 1000))
            events = dict(poller.poll(min(wait, interval_ms)))
            if self.worker_in in events:
                self._drain(self.worker_in, self._on_worker_result)
            if self.worker_out in events:
                self._drain(self.worker_out, self._on_worker_control)
            if self.client_out in events:
                self._drain(self.client_out, self._on_client_control)
            if self.client_in in events and self._window_open():
                self._drain(self.client_in, self._on_client_job)
            if self.db is not None and self.db in events:
                self._drain(self.db, self._db_endpoint.on_message)
            if self.queued:
                self._dispatch()
            now = time.monotonic()
            if now >= next_beat:
                self._heartbeat(now)
                next_beat = now + self.heartbeat_interval_s
            if not self._window_open():
                # jobs waiting and nobody to run them: stop reading new ones
                # for a while so memory stays bounded (clients block on HWM).
                poller.modify(self.client_in, 0)
            else:
                poller.modify(self.client_in, zmq.POLLIN)

    def _window_open(self) -> bool:
        return self.queued < 100_000

    def _drain(self, sock: zmq.Socket[bytes], handler: Any) -> None:
        for _ in range(DRAIN):
            try:
                frames = sock.recv_multipart(zmq.NOBLOCK)
            except zmq.Again:
                return
            handler(frames)

    # clients -----------------------------------------------------------------

    def _on_client_job(self, frames: list[bytes]) -> None:
        try:
            header = decode_header(frames[0])
        except ProtocolError as exc:
            self.malformed.record(str(exc))
            return
        if header.kind != Kind.JOB or len(frames) < 2:
            self._on_stream_control(header, frames)
            return
        job = Job(
            header.client, header, frames, header.function.rpartition(".")[2], time.monotonic()
        )
        try:
            check_size(frames, self.max_message_bytes)
        except PayloadTooLarge as exc:
            self._answer_error(job, "palm.PayloadTooLarge", str(exc))
            return
        self.stats["jobs_in"] += job_count(header, len(frames) - 1)
        self._accept(job)

    def _accept(self, job: Job) -> None:
        """Queue a job that arrived on the job socket (a hook for chained masters)."""
        self._enqueue(job)

    def _on_stream_control(self, header: Header, frames: list[bytes]) -> None:
        """A message other than a job on the job socket (a hook for chained masters)."""
        self.malformed.record(f"{Kind.NAMES.get(header.kind)} on the job socket")

    def _on_client_control(self, frames: list[bytes]) -> None:
        if len(frames) < 2:
            self.malformed.record("client control without header")
            return
        identity = frames[0]
        try:
            header, _ = decode(frames[1:])
        except ProtocolError as exc:
            self.malformed.record(str(exc))
            return
        if header.kind in (Kind.HELLO, Kind.HEARTBEAT):
            info = {
                "session": self.session,
                "workers": len(self.workers),
                "interval_s": self.heartbeat_interval_s,
            }
            reply = Header(Kind.WELCOME, header.id, identity, extra=info)
            self._send_client(identity, [reply.to_wire()])
            waiting = self.undelivered.pop(identity, None)
            self.undelivered_since.pop(identity, None)
            while waiting:
                self._send_client(identity, waiting.popleft())
        elif header.kind == Kind.BYE:
            self.undelivered.pop(identity, None)
            self.undelivered_since.pop(identity, None)
        else:
            self.malformed.record(f"unexpected {Kind.NAMES[header.kind]} from a client")

    def _send_client(self, client: bytes, frames: list[bytes]) -> None:
        try:
            self.client_out.send_multipart([client, *frames], zmq.NOBLOCK)
        except zmq.ZMQError:
            # the client is not connected (yet, or any more): keep its results,
            # within a bound, until it says hello again.
            box = self.undelivered.get(client)
            if box is None:
                box = self.undelivered[client] = deque()
                self.undelivered_since[client] = time.monotonic()
            if len(box) >= self.pending_results_per_client:
                box.popleft()
                self.logger.warning("dropping an undelivered result for a silent client")
            box.append(frames)

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
        if len(frames) < 2:
            self.malformed.record("worker control without header")
            return
        identity = frames[0]
        try:
            header, _ = decode(frames[1:])
        except ProtocolError as exc:
            self.malformed.record(str(exc))
            return
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
            welcome = Header(
                Kind.WELCOME,
                header.id,
                identity,
                extra={"session": self.session, "master": self.name},
            )
            self._send_worker(identity, [welcome.to_wire()])
            self.logger.info(
                "worker %s joined (credit %d)", extra.get("name", identity.hex()), credit
            )
        elif header.kind in (Kind.HEARTBEAT, Kind.CREDIT):
            w = self.workers.get(identity)
            if w is None:
                # a worker we declared dead, or a master restart: ask it to re-register
                self._send_worker(
                    identity,
                    [
                        Header(
                            Kind.WELCOME,
                            0,
                            identity,
                            extra={"reset": True, "session": self.session},
                        ).to_wire()
                    ],
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
        try:
            header = decode_header(frames[0])
        except ProtocolError as exc:
            self.malformed.record(str(exc))
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
        """Send a finished result on (a hook: chained masters pass it to the next stage)."""
        self._send_client(header.client, frames)

    def _heartbeat(self, now: float) -> None:
        deadline = self.heartbeat_interval_s * self.liveness
        for w in list(self.workers.values()):
            if now - w.last_seen > deadline:
                self._worker_dead(w, f"silent for {now - w.last_seen:.1f} s")
        for client, since in list(self.undelivered_since.items()):
            if now - since > self.undelivered_ttl_s:
                lost = len(self.undelivered.pop(client, ()))
                del self.undelivered_since[client]
                self.logger.warning(
                    "dropped %d result message(s) for client %s, silent for %.0f s",
                    lost,
                    client.hex(),
                    self.undelivered_ttl_s,
                )
        self.counters.set_backlog(self.queued)
        for w in self.workers.values():
            self.counters.worker_seen(w.name or w.identity.hex(), w.done)
        beat = Header(Kind.HEARTBEAT, 0, b"", extra={"session": self.session}).to_wire()
        for identity in list(self.workers):
            self._send_worker(identity, [beat])

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
        parts: list[Job] = []
        for i, payload in enumerate(payloads):
            header = job.header.reply(Kind.JOB)
            header.id = job.header.id + i
            header.packed = 0
            part = Job(job.client, header, [header.to_wire(), payload], job.function, job.received)
            part.attempts, part.deaths = job.attempts, job.deaths
            parts.append(part)
        return parts

    # db endpoint -------------------------------------------------------------

    def describe(self) -> bytes:
        info = {
            "name": self.name,
            "kind": "master",
            "session": self.session,
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "addresses": self.bound,
            "workers": [
                {"name": w.name, "pid": w.pid, "host": w.host, "credit": w.credit, "done": w.done}
                for w in self.workers.values()
            ],
            "queued": self.queued,
            "inflight": len(self.inflight),
            "stats": dict(self.stats),
            "malformed": self.malformed.total,
        }
        packed = msgpack.packb(info, use_bin_type=True)
        assert isinstance(packed, bytes)
        return packed
