"""A parallel master in a thread of the test process, with its workers and clients."""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from palm.call.parallel import ParallelClient
from palm.call.request import Client
from palm.errors import ConfigError
from palm.serve.master import Master
from palm.serve.worker import Worker
from palm.testing._harness import Harness, ServiceThread, Transport, wait_until
from palm.testing.stub import StubWorker
from palm.testing.wire import WireClient

__all__ = ["LocalMaster", "MasterEndpoints"]

W = TypeVar("W", bound=Worker)


@dataclass(frozen=True, slots=True)
class MasterEndpoints:
    """The endpoints of a master, named as :class:`~palm.serve.master.Master` names them."""

    pull: str  # clients send jobs here
    push: str  # clients take results from here
    worker_pull: str  # workers send results here
    worker_push: str  # workers take jobs from here
    db: str  # ping, info and the cache


class LocalMaster(Harness):
    """A :class:`~palm.serve.master.Master` running in a thread on fresh endpoints.

    Use it as a context manager; on exit every client, stub, worker and the
    master are stopped and closed and their threads joined, even when the
    body failed. The master runs offline (``redis_url=False``: no Redis is
    looked for or started) with short heartbeats, so a worker that falls
    silent is declared dead within ``heartbeat_interval_s * (liveness + 1)``.

    ``transport='inproc'`` (the default) puts every endpoint in this
    process's ZeroMQ context. ZeroMQ's inproc transport never reconnects, so
    :meth:`restart` needs ``transport='ipc'`` (Unix sockets in a private
    temporary directory), where clients and workers find the new master on
    their own as they would over TCP. The asyncio client methods use a
    context of their own, so they too need ``'ipc'``.

    ``master_options`` go to the master as they are (``pending_results_per_client``,
    ``cache``...); ``master_class`` may be a subclass of Master.
    """

    def __init__(
        self,
        name: str = "master",
        *,
        transport: Transport = "inproc",
        heartbeat_interval_s: float = 0.05,
        liveness: int = 3,
        max_attempts: int = 3,
        timeout_s: float = 5.0,
        secret: bytes | str | None = None,
        master_class: Callable[..., Master] = Master,
        **master_options: Any,
    ) -> None:
        super().__init__(name, transport, timeout_s)
        self.heartbeat_interval_s = heartbeat_interval_s
        self.liveness = liveness
        self.max_attempts = max_attempts
        #: The cluster secret of ``map``, shared by the clients and workers made here.
        self.secret = secret if secret is not None else os.urandom(16).hex()
        self._master_class = master_class
        self._master_options = master_options
        self._endpoints: MasterEndpoints | None = None
        self._master: Master | None = None
        self._runner: ServiceThread | None = None
        self._workers: dict[int, ServiceThread] = {}
        self._db: Client | None = None
        self._db_lock = threading.Lock()

    # lifecycle ---------------------------------------------------------------

    @property
    def endpoints(self) -> MasterEndpoints:
        if self._endpoints is None:
            raise RuntimeError("the local master is not started")
        return self._endpoints

    @property
    def master(self) -> Master:
        """The master now running (a new object after :meth:`restart`)."""
        if self._master is None:
            raise RuntimeError("the local master is not running")
        return self._master

    def start(self) -> LocalMaster:
        """Start the master on fresh endpoints; it is serving when this returns."""
        if self._endpoints is not None:
            raise RuntimeError("the local master is started already")
        self._endpoints = MasterEndpoints(
            pull=self.endpoint("pull"),
            push=self.endpoint("push"),
            worker_pull=self.endpoint("worker-pull"),
            worker_push=self.endpoint("worker-push"),
            db=self.endpoint("db"),
        )
        self._on_close("master", self._stop_master)
        self._on_close("info client", self._close_db)
        try:
            self._start_master()
        except BaseException:
            self.close()
            raise
        return self

    def __enter__(self) -> LocalMaster:
        return self.start()

    def _start_master(self) -> None:
        e = self.endpoints
        master = self._master_class(
            self.name,
            e.pull,
            e.push,
            e.worker_pull,
            e.worker_push,
            e.db,
            heartbeat_interval_s=self.heartbeat_interval_s,
            liveness=self.liveness,
            max_attempts=self.max_attempts,
            redis_url=False,
            **self._master_options,
        )
        ready = threading.Event()
        previous = master.on_ready

        def on_ready(m: Master) -> None:
            ready.set()
            if previous is not None:
                previous(m)

        master.on_ready = on_ready
        runner = ServiceThread(f"palm-testing-master-{self.name}", master.start, master.stop)
        self._master, self._runner = master, runner
        runner.start()
        wait_until(
            lambda: ready.is_set() or not runner.alive,
            self.timeout_s,
            what=f"master {self.name} to bind its sockets",
        )
        if not ready.is_set():
            self._master = self._runner = None
            raise RuntimeError(f"master {self.name} did not start") from runner.error

    def _stop_master(self) -> None:
        runner, self._runner, self._master = self._runner, None, None
        if runner is None:
            return
        runner.stop(self.timeout_s)
        if runner.error is not None:
            raise RuntimeError(f"master {self.name} failed") from runner.error

    def _close_db(self) -> None:
        with self._db_lock:
            if self._db is not None:
                self._db.close()
                self._db = None

    def restart(self) -> Master:
        """Stop the master and start a new one (a new session) on the same endpoints.

        The new master knows nothing of the old one's jobs, workers or
        results: clients send their outstanding jobs again and workers
        register again when they notice. Needs ``transport='ipc'``.
        """
        if self.transport == "inproc":
            raise ConfigError(
                "restart() needs transport='ipc': ZeroMQ's inproc transport never "
                "reconnects, so no peer would reach the new master"
            )
        self._stop_master()
        self._close_db()
        self._start_master()
        return self.master

    # peers -------------------------------------------------------------------

    def client(self, **options: Any) -> ParallelClient:
        """A :class:`~palm.call.parallel.ParallelClient` of this master, closed on exit.

        Its heartbeat interval, timeout and secret are the harness's unless
        ``options`` say otherwise (``batch=1`` sends one job per message).
        """
        settings: dict[str, Any] = {
            "timeout_s": self.timeout_s,
            "heartbeat_interval_s": self.heartbeat_interval_s,
            "secret": self.secret,
        }
        settings.update(options)
        e = self.endpoints
        client = ParallelClient(e.push, e.pull, e.db, self.name, **settings)
        self._on_close("client", self._close_socket_owner(client.close))
        return client

    def wire_client(self, **options: Any) -> WireClient:
        """A :class:`~palm.testing.wire.WireClient` of this master, closed on exit."""
        options.setdefault("timeout_s", min(self.timeout_s, 2.0))
        e = self.endpoints
        client = WireClient(e.push, e.pull, self.name, **options)
        self._on_close("wire client", self._close_socket_owner(client.close))
        return client

    def stub_worker(
        self,
        *functions: str,
        credit: int = 1,
        name: str | None = None,
        register: bool = True,
    ) -> StubWorker:
        """A registered :class:`~palm.testing.stub.StubWorker` declaring ``functions``.

        It heartbeats twice per heartbeat interval, so that a busy machine
        never makes the master take a live stub for dead.
        """
        e = self.endpoints
        stub = StubWorker(
            e.worker_push,
            e.worker_pull,
            name=name or self._next("stub"),
            functions=functions,
            credit=credit,
            heartbeat_interval_s=self.heartbeat_interval_s / 2,
            timeout_s=min(self.timeout_s, 2.0),
            register=register,
        )
        self._on_close("stub worker", stub.close)
        return stub

    def add_worker(
        self,
        worker: Callable[..., W],
        name: str | None = None,
        *,
        wait: bool = True,
        **options: Any,
    ) -> W:
        """Run a real worker in a thread: ``worker(name, push, pull, db, **settings)``.

        ``worker`` is a :class:`~palm.serve.worker.Worker` subclass (or a
        callable making one). It gets this harness's heartbeat interval,
        liveness, secret and ``redis_url=False`` unless ``options`` say
        otherwise. With ``wait`` this returns once the master lists it.
        """
        if name is None:
            base = getattr(worker, "__name__", "worker").lower().replace(".", "-")
            name = self._next(base)
        settings: dict[str, Any] = {
            "heartbeat_interval_s": self.heartbeat_interval_s,
            "liveness": self.liveness,
            "backoff_initial_s": self.heartbeat_interval_s,
            "backoff_max_s": self.heartbeat_interval_s * 4,
            "secret": self.secret,
            "redis_url": False,
        }
        settings.update(options)
        e = self.endpoints
        instance = worker(name, e.worker_push, e.worker_pull, e.db, **settings)
        runner = ServiceThread(f"palm-testing-worker-{name}", instance.start, instance.stop)
        self._workers[id(instance)] = runner
        self._on_close(f"worker {name}", lambda: self._stop_runner(runner))
        runner.start()
        if wait:
            self.wait_for_workers(instance.name)
        return instance

    def stop_worker(self, worker: Worker) -> None:
        """Stop a worker made by :meth:`add_worker` (it says BYE) and join its thread."""
        runner = self._workers.get(id(worker))
        if runner is None:
            raise ValueError(f"worker {worker.name!r} was not added to this master")
        self._stop_runner(runner)

    def _stop_runner(self, runner: ServiceThread) -> None:
        runner.stop(self.timeout_s)
        if runner.error is not None:
            raise RuntimeError(f"{runner.name} failed") from runner.error

    # what the master says about itself -----------------------------------------

    def info(self) -> dict[str, Any]:
        """The master's INFO answer on its db endpoint: session, workers, queued, stats..."""
        with self._db_lock:
            if self._db is None:
                self._db = Client(self.endpoints.db, self.name, timeout_s=self.timeout_s)
            return self._db.info()

    def stats(self) -> dict[str, int]:
        """The master's counters: jobs_in, jobs_out, failed, requeued, duplicates."""
        stats = self.info()["stats"]
        assert isinstance(stats, dict)
        return stats

    def workers(self) -> dict[str, dict[str, Any]]:
        """The workers the master counts as alive, by name (credit, done, pid...)."""
        listed = self.info()["workers"]
        assert isinstance(listed, list)
        return {w["name"]: w for w in listed}

    def wait_for_workers(self, *names: str, timeout_s: float | None = None) -> None:
        """Wait until the master lists every worker in ``names``."""
        wait_until(
            lambda: set(names) <= set(self.workers()),
            self.timeout_s if timeout_s is None else timeout_s,
            what=f"master {self.name} to list workers {sorted(names)}",
        )

    def wait_for_worker_gone(self, name: str, timeout_s: float | None = None) -> None:
        """Wait until the master no longer lists the worker ``name`` (dead or left)."""
        wait_until(
            lambda: name not in self.workers(),
            self.timeout_s if timeout_s is None else timeout_s,
            what=f"master {self.name} to let worker {name!r} go",
        )

    def wait_for_stats(self, timeout_s: float | None = None, **expected: int) -> dict[str, int]:
        """Wait until the master's counters are at least ``expected``; the counters."""

        def reached() -> dict[str, int] | None:
            stats = self.stats()
            return stats if all(stats.get(k, 0) >= v for k, v in expected.items()) else None

        return wait_until(
            reached,
            self.timeout_s if timeout_s is None else timeout_s,
            what=f"master {self.name} counters to reach {expected}",
        )
