"""A master's books of its workers and their jobs, free of sockets.

:class:`Dispatcher` keeps the jobs waiting per function, the workers with
their credit and the functions they declared, and every job handed to a
worker until its result comes back. The master feeds it what its sockets
receive and gives it two callables: ``send`` (hand frames to a worker; False
when the worker is unreachable) and ``fail`` (answer a job with an error).

The rules it holds:

* a job goes only to a worker with credit that declared its function (any
  worker runs ``map`` chunks); a function no worker ever declared is
  answered with ``UnknownFunction`` once workers are there;
* a worker asked to leave (:meth:`Dispatcher.leaving`) gets no more jobs nor
  credit, and is forgotten once it says goodbye behind its last result;
* a worker that dies or leaves gives its jobs back, at the front of their
  queues; only the oldest one it held can have been running, so only that
  one counts a death, is retried one job at a time (a poisonous job cannot
  sink its neighbours) and fails with ``JobLost`` after ``max_attempts``;
* a job that counts a death (a suspect) goes only to a worker holding
  nothing else, and that worker gets nothing else until it answers: if it
  dies, the death is the suspect's own. (The oldest job of a dead worker may
  be innocent: its result can die with the worker before leaving it.) When no
  worker is free, the emptiest one of the suspect's function gets no new jobs
  until it is;
* a result whose job is not in flight (a duplicate, or a late answer from a
  worker declared dead whose job went elsewhere) is dropped.
"""

from __future__ import annotations

import logging
from collections import OrderedDict, deque
from collections.abc import Callable
from dataclasses import dataclass, field

from palm.errors import ProtocolError
from palm.serve.service import split_function, unknown_message
from palm.state.counters import Counters
from palm.wire.messages import job_message
from palm.wire.protocol import Header, decode_header, jobs_in, request_id_of
from palm.wire.shipping import MAP_FUNCTION

__all__ = ["Dispatcher", "Job", "WorkerInfo"]

#: A job's key: the client it belongs to and the id of its first job.
JobKey = tuple[bytes, int]


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
    def key(self) -> JobKey:
        return (self.client, self.header.id)


@dataclass(slots=True)
class WorkerInfo:
    """A registered worker as the master sees it."""

    identity: bytes
    credit: int
    last_seen: float
    pid: int = 0
    host: str = ""
    name: str = ""
    done: int = 0
    functions: frozenset[str] = frozenset()
    leaving: bool = False  # asked to leave: no more jobs, no more credit
    suspect: JobKey | None = None  # the suspect it runs alone (nothing else meanwhile)
    kept_free: bool = False  # gets no new jobs until empty: a suspect waits for it
    # jobs handed to this worker, in the order it runs them (a dict as an ordered set)
    inflight: dict[JobKey, None] = field(default_factory=dict)

    @property
    def label(self) -> str:
        return self.name or self.identity.hex()


class Dispatcher:
    """Jobs waiting, jobs in flight, and the workers that run them."""

    def __init__(
        self,
        owner: str,
        *,
        max_attempts: int,
        send: Callable[[bytes, list[bytes]], bool],
        fail: Callable[[Job, str, str], None],
        counters: Counters,
        stats: dict[str, int],
        logger: logging.Logger,
    ) -> None:
        self.owner = owner
        self.max_attempts = max_attempts
        self.send = send
        self.fail = fail
        self.counters = counters
        self.stats = stats
        self.logger = logger
        # jobs waiting for a worker, one queue per function (workers may differ)
        self.queues: dict[str, deque[Job]] = {}
        self.queued = 0
        # map chunks start one worker further on each time, so a worker that
        # always has credit (answering at once, or falsely) cannot take every
        # lone chunk, such as one sent again after a forged answer
        self._turn = 0
        self.known_functions: set[str] = {MAP_FUNCTION}
        self.inflight: dict[JobKey, Job] = {}
        self.workers: OrderedDict[bytes, WorkerInfo] = OrderedDict()
        # per function, the worker kept free for the suspect at the head of its queue
        self._kept: dict[str, WorkerInfo] = {}

    # jobs ----------------------------------------------------------------------

    def enqueue(self, job: Job, front: bool = False) -> None:
        queue = self.queues.get(job.function)
        if queue is None:
            queue = self.queues[job.function] = deque()
        if front:
            queue.appendleft(job)
        else:
            queue.append(job)
        self.queued += 1

    def dispatch(self) -> None:
        """Hand waiting jobs to the workers that have credit for them."""
        ready = [w for w in self.workers.values() if w.credit > 0 and w.suspect is None]
        if not ready:
            return
        for function, queue in list(self.queues.items()):
            if not queue:
                del self.queues[function]
                self._keep_free(function, None)
                continue
            if function == MAP_FUNCTION:
                self._turn = (self._turn + 1) % len(ready)
                workers = ready[self._turn :] + ready[: self._turn]
            else:
                workers = [w for w in ready if function in w.functions]
                if not workers and function not in self.known_functions and self.workers:
                    self._unknown(function, queue)
                    continue
            self._hand_out(function, queue, workers)
            ready = [w for w in ready if w.credit > 0 and w.suspect is None]
            if not ready:
                return

    def _hand_out(self, function: str, queue: deque[Job], workers: list[WorkerInfo]) -> None:
        # a worker kept free for a suspect takes no other job
        others = [w for w in workers if not w.kept_free] if self._kept else workers
        while queue and workers:
            job = queue[0]
            if job.deaths:
                w = self._alone_for(function, workers)
                if w is None:
                    return  # the queue waits for a worker free of other jobs
                self._keep_free(function, None)
                w.suspect = job.key
            else:
                kept = self._kept.get(function) if self._kept else None
                if not others and kept is not None and any(w is kept for w in workers):
                    # a job ahead of the suspect (put back in front): it goes first
                    self._keep_free(function, None)
                    others = [w for w in workers if not w.kept_free]
                if not others:
                    return
                # the worker with the fewest messages in hand (the first of equals): one
                # holding credit to spare, asked for ahead of fast messages, must not
                # collect slow messages behind each other while another worker idles
                w = others[0] if len(others) == 1 else min(others, key=_in_hand)
            queue.popleft()
            self.queued -= 1
            job.worker = w.identity
            job.attempts += 1
            self.inflight[job.key] = job
            w.inflight[job.key] = None
            w.credit -= 1
            unreachable = not self.send(w.identity, job.frames)
            if unreachable:
                # the worker vanished under us: forget it, its jobs go back
                self.gone(w, "unreachable")
            if unreachable or w.credit <= 0 or w.suspect is not None:
                workers = [x for x in workers if x is not w]
                others = [x for x in others if x is not w]

    def _alone_for(self, function: str, workers: list[WorkerInfo]) -> WorkerInfo | None:
        """A worker for the suspect at the head of ``function``'s queue: one holding
        nothing (the one kept free for it first); else None, and the emptiest
        other worker is kept free of new jobs until it holds nothing."""
        kept = self._kept.get(function)
        idle = [w for w in workers if not w.inflight and (not w.kept_free or w is kept)]
        if idle:
            return kept if any(w is kept for w in idle) else idle[0]
        if kept is None:
            candidates = [w for w in workers if not w.kept_free]
            if candidates:
                self._keep_free(function, min(candidates, key=_in_hand))
        return None

    def _keep_free(self, function: str, worker: WorkerInfo | None) -> None:
        """Keep ``worker`` free of new jobs for ``function``'s suspect (None: no longer)."""
        old = self._kept.pop(function, None) if self._kept else None
        if old is not None:
            old.kept_free = False
        if worker is not None:
            worker.kept_free = True
            self._kept[function] = worker

    def _unkeep(self, worker: WorkerInfo) -> None:
        """``worker`` is gone: it is kept free for nobody any more."""
        for function, kept in list(self._kept.items()):
            if kept is worker:
                self._keep_free(function, None)

    def _unknown(self, function: str, queue: deque[Job]) -> None:
        """No worker seen so far knows ``function``: answer every job now."""
        known = self.known_functions - {MAP_FUNCTION}
        server = split_function(function)[0]
        if server and server != self.owner:
            message = unknown_message(self.owner, function, known)
        else:
            have = ", ".join(sorted(known)) or "(none)"
            message = f"no worker of {self.owner!r} has function {function!r}; they have: {have}"
        while queue:
            self.queued -= 1
            self.fail(queue.popleft(), "palm.UnknownFunction", message)

    def finished(
        self,
        key: JobKey,
        worker: bytes | None,
        count: int,
        now: float,
        credit_back: bool = True,
    ) -> Job | None:
        """A result came from ``worker`` for ``count`` jobs: the job it finishes, or
        None when that job is not in flight (a duplicate, or a late answer).

        The worker gets its credit back only for a job it was handed and had
        not answered yet, so a worker answering twice earns nothing for it;
        nor when ``credit_back`` is false (the worker gives that credit up).
        """
        w = self.workers.get(worker) if worker is not None else None
        if w is not None:
            w.last_seen = now
            if key in w.inflight:  # a worker answering twice earns no credit for it
                del w.inflight[key]
                if w.suspect == key:
                    w.suspect = None  # it ran alone and came back: free for anything
                w.credit += 0 if w.leaving or not credit_back else 1
                w.done += count
        job = self.inflight.pop(key, None)
        if job is None:
            self.stats["duplicates"] += 1
        # A late answer from a worker declared dead may finish a job another
        # worker holds now: that worker keeps it in its books until it answers
        # too, and gets its credit back then.
        return job

    # workers -------------------------------------------------------------------

    def join(self, worker: WorkerInfo) -> None:
        """A worker registers (again: what it held goes back first)."""
        old = self.workers.pop(worker.identity, None)
        if old is not None:
            self._unkeep(old)
            self._requeue(old, died=False)
        self.known_functions |= worker.functions
        self.workers[worker.identity] = worker
        self.counters.worker_seen(worker.label, 0, host=worker.host, pid=worker.pid)

    def seen(self, identity: bytes, now: float, credit: int = 0) -> bool:
        """A sign of life (and maybe more credit) from a worker; False if it is unknown."""
        w = self.workers.get(identity)
        if w is None:
            return False
        w.last_seen = now
        if not w.leaving:
            w.credit += credit
        return True

    def leaving(self, identity: bytes) -> None:
        """A worker asks to leave: it gets nothing more; what it holds it finishes."""
        w = self.workers.get(identity)
        if w is not None:
            w.leaving = True
            w.credit = 0
            self.logger.info(
                "worker %s is leaving; it finishes its %d job message(s)", w.label, len(w.inflight)
            )

    def left(self, identity: bytes) -> None:
        w = self.workers.get(identity)
        if w is not None:
            self.gone(w, "left")

    def expire(
        self,
        now: float,
        silence_s: float,
        *,
        read_at: float | None = None,
        grace_s: float = 0.0,
    ) -> None:
        """Declare dead every worker the master could have heard and did not.

        A worker is dead when it was silent for longer than ``silence_s`` up
        to ``read_at``: the last time the master read its worker sockets to
        the end (default ``now``). Messages still waiting to be read are not
        silence, so a busy or stalled loop judges nobody on them. With
        ``grace_s`` (the loop itself was late) every worker is first given
        that long again before its silence counts: its silence is taken to
        start no earlier than ``now - silence_s + grace_s``.
        """
        judged_at = now if read_at is None else min(now, read_at)
        fresh = now - silence_s + grace_s
        for w in list(self.workers.values()):
            if grace_s > 0 and w.last_seen < fresh:
                w.last_seen = fresh
            if judged_at - w.last_seen > silence_s:
                self.gone(w, f"silent for {judged_at - w.last_seen:.1f} s")

    def gone(self, w: WorkerInfo, why: str) -> None:
        """Forget a worker; its jobs go to others."""
        self.workers.pop(w.identity, None)
        if w.kept_free:
            self._unkeep(w)
        self.counters.worker_lost(w.label)
        level = logging.INFO if why == "left" and not w.inflight else logging.WARNING
        self.logger.log(
            level,
            "worker %s (pid %s) is gone (%s); %d job message(s) go to other workers",
            w.label,
            w.pid,
            why,
            len(w.inflight),
        )
        self._requeue(w, died=why != "left")

    def _requeue(self, w: WorkerInfo, died: bool = True) -> None:
        """Hand a gone worker's jobs back, the one it was running counting a death."""
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
                    self.fail(
                        job,
                        "palm.JobLost",
                        f"the job's worker died {job.deaths} times while running it; not retried",
                    )
                    continue
                requeue.extend(split(job))
            else:
                requeue.append(job)
        for job in reversed(requeue):
            self.enqueue(job, front=True)
        w.inflight.clear()


_REQUEST_IDS = ("request_id", "request_ids")


def split(job: Job) -> list[Job]:
    """A batch as jobs of one payload each, with their own ids and request ids."""
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
        request_id = request_id_of(header.extra, i)
        frames = job_message(
            job.client,
            header.id + i,
            header.function,
            [payload],
            extra=extra or None,
            request_ids=[request_id if isinstance(request_id, str) else None],
            pipeline=header.pipeline,
            stage=header.stage,
            key=header.key,
        )
        part = Job(job.client, decode_header(frames[0]), frames, job.function, job.received)
        part.attempts, part.deaths = job.attempts, job.deaths
        parts.append(part)
    return parts


def _in_hand(worker: WorkerInfo) -> int:
    return len(worker.inflight)
