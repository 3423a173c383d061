"""The worker pool service: starts, supervises and scales worker processes."""

from workers.pool import WorkerPool

__all__ = ["WorkerPool"]
