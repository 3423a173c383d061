"""The parallel worker: asks its master for jobs with credit, runs them, pushes results.

A worker connects a DEALER to the master's ``worker_push_address`` (jobs,
credit, heartbeats) and a PUSH to its ``worker_pull_address`` (results and
this worker's heartbeats, which a thread sends even while user code runs).
When the master falls silent for ``liveness`` heartbeats, or a master with a
new session answers, the worker registers again, waiting with exponential
backoff between attempts.

A worker that knows only the master's ``db_address`` asks it for the other
two addresses first.
"""

from __future__ import annotations

import threading
import time
import uuid
from typing import Literal

import zmq

from palm.errors import ConfigError, ProtocolError
from palm.serve.loop import HandlerGuard
from palm.serve.service import Service, split_function
from palm.serve.stopper import Stopper
from palm.state.cache import Cache
from palm.state.deployment import Deployment
from palm.wire import shipping as mapping
from palm.wire.arena import SHARED_KEY, UNREADABLE, resolve
from palm.wire.control import Ready, Welcome, map_report, unparsable
from palm.wire.discovery import CacheClient
from palm.wire.info import ServiceInfo
from palm.wire.messages import PACK_BELOW_BYTES, control
from palm.wire.protocol import (
    DEFAULT_MAX_MESSAGE_BYTES,
    Header,
    Kind,
    MalformedCounter,
    decode,
    decode_header,
    frames_for,
    jobs_in,
)
from palm.wire.security import KeysOption, Security, security_for
from palm.wire.shipping import Elsewhere
from palm.wire.sockets import (
    as_bytes,
    check_endpoint,
    make_socket,
    recv_forwarded,
    send_frames,
)

_NOBLOCK = int(zmq.NOBLOCK)

__all__ = ["FunctionWorker", "HeartbeatThread", "Worker"]

#: A worker asks for one more message ahead (a CREDIT) after running a message of
#: several jobs in at most this long, up to ``EXTRA_CREDIT`` more than its
#: ``credit``: the master then keeps it supplied without a wake-up per message,
#: while what it holds ahead stays a few milliseconds of work. Messages of one
#: job (requests, large payloads) and map chunks keep ``credit`` as it is (a map
#: of tiny tasks ran at 0.7x with it: its client, vetting every answer, is the
#: process short of CPU, and workers running further ahead take it).
FAST_MESSAGE_S = 0.001

#: ... and gives one such credit back (its result returns none) after a message
#: that took at least this long, so slow messages are never held back behind
#: others and spread over the workers as with ``credit`` alone.
SLOW_MESSAGE_S = 0.005

#: Most credit a worker adds to its ``credit`` for fast messages.
EXTRA_CREDIT = 6

#: How long a worker waits in a receive for its next message before it waits on
#: a poller instead (which a stop request wakes at once). While messages keep
#: coming, each is taken by a receive that finds it queued: no system call, where
#: a poll and a look at the socket cost about 8 µs per message.
BUSY_WAIT_MS = 10


class Worker(Service):
    """A worker of a parallel :class:`~palm.serve.master.Master`.

    Subclass it and define functions ``def foo(self, message: bytes) -> bytes``
    (or, marked :func:`~palm.serve.views.zero_copy`, taking a read-only
    ``memoryview`` of the received frame). Every worker also runs ``map``
    chunks shipped by :meth:`palm.call.parallel.ParallelClient.map` (signed
    with the cluster secret).
    """

    _palm_framework = True
    _sends_views = True

    def __init__(
        self,
        name: str,
        push_address: str | None = None,
        pull_address: str | None = None,
        db_address: str | None = None,
        *,
        credit: int = 2,
        heartbeat_interval_s: float = 1.0,
        liveness: int = 3,
        backoff_initial_s: float = 0.1,
        backoff_max_s: float = 5.0,
        secret: bytes | str | None = None,
        redis_url: str | Literal[False] | None = None,
        cluster: str | None = None,
        keys: KeysOption = None,
    ) -> None:
        super().__init__(name)
        if (push_address is None or pull_address is None) and db_address is None:
            raise ConfigError("a worker needs push_address and pull_address, or db_address")
        self.push_address = check_endpoint(push_address, "push_address") if push_address else None
        self.pull_address = check_endpoint(pull_address, "pull_address") if pull_address else None
        self.db_address = db_address
        self.credit = credit
        self.heartbeat_interval_s = heartbeat_interval_s
        self.liveness = liveness
        self.backoff_initial_s = backoff_initial_s
        self.backoff_max_s = backoff_max_s
        self.secret = mapping.resolve_secret(secret)
        self._secret_looked_up = False
        #: CURVE with the worker key pair (``keys=`` or PALM_KEYS; None: plain)
        self.security = security_for(keys, "worker")
        self.identity = uuid.uuid4().bytes
        self.session: str | None = None
        self.jobs_done = 0
        #: credit asked for on top of ``credit`` since the last READY (see FAST_MESSAGE_S)
        self.extra_credit = 0
        self._leaving = False
        self.malformed = MalformedCounter(name, self.logger)
        #: what the loop caught of exceptions no handler foresaw
        self.failures = HandlerGuard(f"worker {name}", self.logger)
        self._stopper = Stopper()
        self._functions_cache: dict[bytes, object] = {}
        #: runs map chunks whose packages this environment lacks (``--install-deps``:
        #: in an environment built for them); None: the client gets a DependencyError
        self.elsewhere: Elsewhere | None = None
        self.redis_url = redis_url
        self.cluster = cluster
        self.deployment: Deployment | None = None
        self._cache_client: _MissingAsNone | None = None
        self._welcomed = False  # a master's WELCOME came in this session

    def shared_cache(self) -> Cache:
        """Redis when the deployment has one, else the master's db endpoint."""
        # a deployment still opening (in the background, see WELCOME) is waited for
        state = self.deployment.opened() if self.deployment is not None else None
        if state is not None:
            return state
        if self.db_address:
            if self._cache_client is None:
                self._cache_client = _MissingAsNone(
                    CacheClient(self.db_address, keys=self.security or False)
                )
            return self._cache_client
        return super().shared_cache()

    # lifecycle ---------------------------------------------------------------

    def stop(self) -> None:
        """Leave gracefully: ask the master for no more jobs, finish the ones held
        (:meth:`_leave`), say goodbye, and return from ``start()``. SIGTERM does the same."""
        self._stopper.stop()

    def start(self) -> None:
        """Serve the master until SIGINT/SIGTERM or :meth:`stop`."""
        with self._stopper.on_signals():
            try:
                self._run()
            finally:
                self._stopper.close()

    def _run(self) -> None:
        if (self.push_address is None or self.pull_address is None) and not self._discover_master():
            return
        assert self.push_address is not None and self.pull_address is not None
        results = make_socket(zmq.PUSH, hwm=10_000, curve=self.security)
        results.connect(self.pull_address)
        beats = HeartbeatThread(
            self.pull_address, self.identity, self.heartbeat_interval_s, security=self.security
        )
        beats.start()
        backoff = self.backoff_initial_s
        try:
            while not self._stopper.stopping:
                served = self._session(results)
                if self._stopper.stopping:
                    break
                backoff = self.backoff_initial_s if served else min(backoff * 2, self.backoff_max_s)
                self.logger.warning(
                    "worker %s lost its master; registering again in %.1f s", self.name, backoff
                )
                self._sleep(backoff)
        finally:
            beats.stop()
            results.close(0)
            if self.deployment is not None:
                self.deployment.close()
            if self._cache_client is not None:
                self._cache_client.close()
            close = getattr(self.elsewhere, "close", None)
            if close is not None:
                close()

    def _sleep(self, seconds: float) -> None:
        poller = zmq.Poller()
        poller.register(self._stopper.fd, zmq.POLLIN)
        poller.poll(int(seconds * 1000))

    def _discover_master(self) -> bool:
        """Learn the master's worker addresses from its db endpoint."""
        assert self.db_address is not None
        backoff = self.backoff_initial_s
        host = _host_of(self.db_address)
        while not self._stopper.stopping:
            sock = make_socket(zmq.DEALER, curve=self.security)
            sock.connect(self.db_address)
            try:
                sock.send_multipart(control(Kind.INFO, id=1))
                if sock.poll(int(max(backoff, 0.5) * 1000), zmq.POLLIN):
                    _, payloads = decode(sock.recv_multipart())
                    addresses = ServiceInfo.from_wire(payloads[0]).addresses
                    self.push_address = _connectable(addresses["worker_push"], host)
                    self.pull_address = _connectable(addresses["worker_pull"], host)
                    return True
            except (ProtocolError, IndexError, KeyError):
                self.logger.warning(
                    "worker %s got a bad answer from %s", self.name, self.db_address
                )
            finally:
                sock.close(0)
            self._sleep(backoff)
            backoff = min(backoff * 2, self.backoff_max_s)
        return False

    def _session(self, results: zmq.Socket[bytes]) -> bool:
        """Register with the master and serve it; return when it goes silent."""
        assert self.push_address is not None
        dealer = make_socket(zmq.DEALER, identity=self.identity, hwm=1000, curve=self.security)
        dealer.connect(self.push_address)
        served = False
        self._welcomed = False
        try:
            self._ready(dealer)
            interval_ms = max(1, int(self.heartbeat_interval_s * 1000))
            # busy, a receive that waits a little; idle, the poller (see BUSY_WAIT_MS)
            dealer.setsockopt(zmq.RCVTIMEO, min(interval_ms, BUSY_WAIT_MS))
            poller = zmq.Poller()
            poller.register(dealer, zmq.POLLIN)
            poller.register(self._stopper.fd, zmq.POLLIN)
            silence_s = self.heartbeat_interval_s * self.liveness
            last_heard = time.monotonic()
            while not self._stopper.stopping:
                try:
                    # large payloads stay in ZeroMQ's buffers (see palm.serve.views)
                    frames = recv_forwarded(dealer)
                except zmq.Again:
                    if time.monotonic() - last_heard > silence_s:
                        return served
                    poller.poll(interval_ms)
                    continue
                last_heard = time.monotonic()
                try:
                    if not self._on_message(frames, dealer, results):
                        return served
                except Exception as exc:  # the last resort: one message must not end it
                    self.failures.record(exc)
                served = True
            self._leave(dealer, results)
            return served
        finally:
            dealer.close(0)

    def _leave(self, dealer: zmq.Socket[bytes], results: zmq.Socket[bytes]) -> None:
        """Leave the master without losing or doubling a job.

        Ask to leave (a BYE with ``leave``): the master hands this worker no
        more jobs and answers with a BYE sent after every job it gave it. Run
        each job that arrives before that BYE, then say goodbye on the result
        socket, behind the last result, so the master has every answer before
        it forgets this worker. A master that stays silent for ``liveness``
        heartbeats is left all the same; it gives the jobs still held here to
        other workers. Without a WELCOME in this session (no master took this
        worker in, or the master stopped) there is nobody to wait for.
        """
        if not self._welcomed:
            return
        self._leaving = True
        try:
            dealer.send_multipart(control(Kind.BYE, leave=True), zmq.NOBLOCK)
        except zmq.ZMQError:
            return
        silence_s = max(self.heartbeat_interval_s * self.liveness, 1.0)
        deadline = time.monotonic() + silence_s
        held, goodbye = 0, False
        while not goodbye:
            wait_ms = int((deadline - time.monotonic()) * 1000)
            if wait_ms <= 0 or not dealer.poll(wait_ms, zmq.POLLIN):
                self.logger.warning("worker %s: no goodbye from the master; leaving", self.name)
                break
            frames = dealer.recv_multipart()
            try:
                kind = decode_header(frames[0]).kind
            except (ProtocolError, IndexError):
                kind = 0
            goodbye = kind == Kind.BYE
            if kind != Kind.JOB:
                continue  # heartbeats, or a new master's WELCOME: no new session now
            held += 1
            try:
                self._on_message(frames, dealer, results)
            except Exception as exc:  # the last resort, as in the session loop
                self.failures.record(exc)
            deadline = time.monotonic() + silence_s
        bye = Header(Kind.BYE, 0, extra={"w": self.identity})
        results.send_multipart([bye.to_wire()])
        self.logger.info(
            "worker %s left after finishing %d job message(s) in hand", self.name, held
        )

    def _ready(self, dealer: zmq.Socket[bytes]) -> None:
        self.extra_credit = 0  # a READY declares the base credit afresh
        self._leaving = False
        dealer.send_multipart(
            Ready.of_this_process(self.credit, self.name, self.functions).message()
        )

    def _on_message(
        self, frames: list[bytes], dealer: zmq.Socket[bytes], results: zmq.Socket[bytes]
    ) -> bool:
        """Handle one message from the master; False means register again."""
        try:
            header, payloads = decode(frames)
        except ProtocolError as exc:
            self.malformed.record(str(exc))
            self._answer_unreadable(frames, str(exc), results)
            return True
        if header.kind == Kind.JOB:
            try:
                jobs = jobs_in(header, payloads)
            except ProtocolError as exc:
                # answered all the same: the master retires it, our credit comes back
                self.malformed.record(str(exc))
                self._send_result(results, *unparsable(header, payloads, str(exc), self.name))
                return True
            if header.extra and SHARED_KEY in header.extra:
                try:  # a client's large payloads in its shared-memory arena
                    jobs = resolve(header.extra, jobs, DEFAULT_MAX_MESSAGE_BYTES)
                except ProtocolError as exc:  # the client sends them again inline
                    reply, empties = unparsable(header, payloads, str(exc), self.name, UNREADABLE)
                    self._send_result(results, reply, empties)
                    return True
            started = time.perf_counter()
            try:
                reply, out = self.run_job(header, jobs)
            except Exception as exc:  # palm's own code failed on this job: say so, keep serving
                self.failures.record(exc)
                reply, out = unparsable(header, payloads, f"{type(exc).__name__}", self.name)
                reply.extra = dict(header.extra or {}, w=self.identity)
            fast = len(jobs) > 1 and split_function(header.function)[1] != mapping.MAP_FUNCTION
            more = self._pace(time.perf_counter() - started, fast, reply)
            self._send_result(results, reply, out)
            if more:
                self._ask_credit(dealer)
            self.jobs_done += len(jobs)
            return True
        extra = header.extra or {}
        session = extra.get("session")
        if header.kind == Kind.WELCOME:
            try:
                welcome = Welcome.from_header(header)
            except ProtocolError as exc:
                self.malformed.record(f"WELCOME: {exc}")
                return True
            if self.deployment is None and welcome.master:
                # central logs under the master's name, once we know it
                self.deployment = Deployment(
                    welcome.master,
                    self.name,
                    redis_url=self.redis_url,
                    cluster=self.cluster,
                    publish=False,
                ).open(background=True)  # the master may still be starting its Redis
            if welcome.reset:
                self.logger.info("worker %s: master asks to register again", self.name)
                self._ready(dealer)
            self.session = welcome.session
            self._welcomed = True
            return True
        if header.kind == Kind.BYE:
            self.logger.info("worker %s: the master stops; registering again later", self.name)
            self._welcomed = False
            return False
        if header.kind == Kind.HEARTBEAT:
            if self.session is not None and session != self.session:
                self.logger.info("worker %s: master restarted; registering again", self.name)
                self.session = None
                self._ready(dealer)
            return True
        self.malformed.record(f"unexpected {Kind.NAMES[header.kind]} from the master")
        return True

    def _answer_unreadable(
        self, frames: list[bytes], reason: str, results: zmq.Socket[bytes]
    ) -> None:
        """Answer a message that does not decode, when its header says it is a JOB."""
        if not frames:
            return
        try:
            header = decode_header(frames[0])
        except ProtocolError:
            return  # no job id to answer: nothing the master waits for either
        if header.kind != Kind.JOB:
            return
        header.errors = None
        self._send_result(results, *unparsable(header, frames[1:], reason, self.name))

    def _pace(self, elapsed_s: float, may_ask: bool, reply: Header) -> bool:
        """Whether to ask for one more message ahead after a message that ran in
        ``elapsed_s`` (only if ``may_ask``); after a slow one, ``reply`` gives an
        extra credit back instead. A leaving worker asks for nothing."""
        if elapsed_s <= FAST_MESSAGE_S:
            return may_ask and self.extra_credit < EXTRA_CREDIT and not self._leaving
        if elapsed_s >= SLOW_MESSAGE_S and self.extra_credit > 0:
            self.extra_credit -= 1
            reply.extra = dict(reply.extra or {}, w=self.identity, nc=True)
        return False

    def _ask_credit(self, dealer: zmq.Socket[bytes]) -> None:
        try:
            dealer.send_multipart(control(Kind.CREDIT, credit=1), _NOBLOCK)
        except zmq.ZMQError:
            return  # not asked: nothing to give back later either
        self.extra_credit += 1

    def _send_result(self, results: zmq.Socket[bytes], reply: Header, out: list[bytes]) -> None:
        if reply.extra is None or reply.extra.get("w") != self.identity:
            reply.extra = dict(reply.extra or {}, w=self.identity)
        if reply.packed and max(map(len, out), default=0) > PACK_BELOW_BYTES:
            reply.packed = 0  # large results of small jobs: a frame each, never packed (copied)
        send_frames(results, [reply.to_wire(), *frames_for(reply, out)])

    # jobs --------------------------------------------------------------------

    def resolve(self, function: str):  # type: ignore[no-untyped-def]
        """Workers answer ``'<master>.foo'`` for any master name."""
        return self._functions.get(split_function(function)[1])

    def map_secret(self) -> bytes | None:
        """The secret for map chunks: explicit or PALM_SECRET, else this user's
        local secret when the master is on loopback (looked up once)."""
        if self.secret is None and not self._secret_looked_up:
            self._secret_looked_up = True
            endpoints = (self.push_address, self.pull_address, self.db_address)
            try:
                self.secret = mapping.secret_for(None, endpoints)
            except ConfigError as exc:
                self.logger.warning("worker %s: no local secret for map: %s", self.name, exc)
        return self.secret

    def run_job(self, header: Header, payloads: list[bytes]) -> tuple[Header, list[bytes]]:
        reply = header.reply()
        reply.extra = dict(header.extra or {}, w=self.identity)
        name = split_function(header.function)[1]
        if name == mapping.MAP_FUNCTION:
            payloads = as_bytes(payloads)
            secret = self.map_secret()
            functions, name, elsewhere = self._functions_cache, self.name, self.elsewhere
            run = mapping.run_chunk
            report: list[tuple[str, bool]] = []
            answers = [
                run(p, secret, functions, worker=name, elsewhere=elsewhere, report=report)
                for p in payloads
            ]
            # for the master's counters: the user's function, and the chunks that failed
            failed = len(payloads) - sum(ok for _name, ok in report)
            function = next((fn_name for fn_name, _ in report if fn_name), "")
            reply.extra = map_report(reply.extra, function, failed)
            if failed:  # the central logs (and the dashboard's recent errors) say so
                self.logger.warning(
                    "worker %s: %d of %d chunk(s) of %s failed",
                    name,
                    failed,
                    len(payloads),
                    function,
                )
            return reply, answers
        func = self.resolve(header.function)
        if func is None:
            reply.errors = self.unknown_all(header, len(payloads))
            return reply, [b""] * len(payloads)
        out, errors = self.call_all(func, header, payloads)
        if errors:
            reply.errors = errors
        return reply, out


class FunctionWorker(Worker):
    """A generic worker with no functions of its own: it runs ``map`` chunks."""

    _palm_framework = True


class _MissingAsNone:
    """The db endpoint's cache with ``get`` answering None for a missing key."""

    def __init__(self, client: CacheClient) -> None:
        self.client = client

    def set(self, value: bytes, key: str | None = None) -> str:
        return self.client.set(value, key)

    def get(self, key: str) -> bytes | None:
        try:
            return self.client.get(key)
        except KeyError:
            return None

    def delete(self, key: str) -> bool:
        return self.client.delete(key)

    def close(self) -> None:
        self.client.close()


class HeartbeatThread(threading.Thread):
    """Tells the master this process is alive, even while user code runs."""

    def __init__(
        self,
        address: str,
        identity: bytes,
        interval_s: float,
        name: str = "palm-worker-heartbeat",
        security: Security | None = None,
    ) -> None:
        super().__init__(name=name, daemon=True)
        self.security = security
        self.address = address
        self.identity = identity
        self.interval_s = interval_s
        self._done = threading.Event()

    def run(self) -> None:
        sock = make_socket(zmq.PUSH, hwm=4, curve=self.security)
        sock.connect(self.address)
        beat = Header(Kind.HEARTBEAT, 0, extra={"w": self.identity}).to_wire()
        try:
            while not self._done.wait(self.interval_s):
                try:
                    sock.send(beat, zmq.NOBLOCK)
                except zmq.ZMQError:
                    pass
        finally:
            sock.close(0)

    def stop(self, wait_s: float = 2.0) -> None:
        self._done.set()
        self.join(wait_s)


def _host_of(endpoint: str) -> str:
    if endpoint.startswith("tcp://"):
        return endpoint[len("tcp://") :].rsplit(":", 1)[0]
    return ""


def _connectable(endpoint: str, host: str) -> str:
    """A bound endpoint as seen from here: wildcard hosts become the master's host."""
    if endpoint.startswith("tcp://"):
        bound_host, port = endpoint[len("tcp://") :].rsplit(":", 1)
        if bound_host in ("0.0.0.0", "*", "[::]", "::") and host:
            return f"tcp://{host}:{port}"
    return endpoint
