"""The worker pool service: starts, supervises and scales worker processes."""

from palm.workers.pool import WorkerPool

__all__ = ["WorkerPool"]
