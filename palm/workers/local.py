"""The local-process backend of the scaling controller: a :class:`WorkerPool`."""

from __future__ import annotations

from typing import TYPE_CHECKING

from palm.workers.controller import Census

if TYPE_CHECKING:
    from palm.workers.pool import WorkerPool

__all__ = ["ProcessBackend"]


class ProcessBackend:
    """Worker processes of a :class:`~palm.workers.pool.WorkerPool` on this machine.

    The pool itself restarts a worker that crashes (with backoff), so no
    death reaches the controller: the pool's size is what the controller set.
    """

    kind = "process"

    def __init__(self, pool: WorkerPool) -> None:
        self.pool = pool

    def census(self) -> Census:
        self.pool.check()
        return Census(self.pool.names, len(self.pool.leaving))

    def scale_to(self, desired: int) -> None:
        self.pool.scale(desired)
