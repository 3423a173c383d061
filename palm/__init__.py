"""palm: clusters of high-performance micro-servers on ZeroMQ."""

__version__ = "0.1.0"

from palm.errors import (
    BadResult,
    ClientClosed,
    ConfigError,
    DependencyError,
    JobLost,
    PalmError,
    PayloadTooLarge,
    ProtocolError,
    RemoteError,
    StateError,
    TimeoutError,
    UnknownFunction,
)
from palm.serve.views import zero_copy

__all__ = [
    # errors
    "BadResult",
    "ClientClosed",
    "ConfigError",
    "DependencyError",
    "JobLost",
    "PalmError",
    "PayloadTooLarge",
    "ProtocolError",
    "RemoteError",
    "StateError",
    "TimeoutError",
    "UnknownFunction",
    # version
    "__version__",
    # worker functions
    "zero_copy",
]
