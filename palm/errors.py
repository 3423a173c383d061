"""palm's exceptions: one tree, rooted at :class:`PalmError`.

::

    PalmError
    ├── ConfigError            bad arguments, addresses or configuration files
    ├── ProtocolError          a frame that does not parse as a palm message
    ├── PayloadTooLarge        a message over the configured maximum size
    ├── StateError             the shared state (Redis) cannot be reached or used
    ├── TimeoutError           no reply in time (also a builtins.TimeoutError)
    ├── ClientClosed           a call on a client after its close() (also a RuntimeError)
    └── RemoteError            an error raised on the far side, carried back
        ├── UnknownFunction    the server has no such function
        ├── BadResult          a user function returned something that is not bytes
        ├── JobLost            a job killed its worker too many times
        └── DependencyError    a worker lacks a package a shipped function needs

Errors raised on a server travel back to the caller as :class:`RemoteError`
values carrying the remote type, message and traceback text; the server keeps
serving. :func:`remote_error` rebuilds the most specific class on the caller's
side from the fields that travelled.
"""

from __future__ import annotations

import builtins

__all__ = [
    "BadResult",
    "ClientClosed",
    "ConfigError",
    "DependencyError",
    "JobLost",
    "MalformedJob",
    "PalmError",
    "PayloadTooLarge",
    "ProtocolError",
    "RemoteError",
    "StateError",
    "TimeoutError",
    "UnknownFunction",
    "remote_error",
]


class PalmError(Exception):
    """The root of every error palm raises."""


class ConfigError(PalmError, ValueError):
    """An argument, address or configuration value is not usable."""


class ProtocolError(PalmError):
    """A message whose frames do not parse as a palm message."""


class PayloadTooLarge(PalmError):
    """A message larger than the configured maximum (``max_message_bytes``)."""

    def __init__(self, size: int, limit: int) -> None:
        super().__init__(f"message of {size} bytes is over the limit of {limit} bytes")
        self.size = size
        self.limit = limit


class StateError(PalmError):
    """The shared state (Redis) cannot be reached or refused an operation."""


class TimeoutError(PalmError, builtins.TimeoutError):
    """No reply arrived within the caller's timeout."""


class ClientClosed(PalmError, RuntimeError):
    """A call on a client that was closed; a closed client does not open again."""


class RemoteError(PalmError):
    """An error raised on the far side of a palm connection.

    ``remote_type`` is the qualified name of the exception class raised
    remotely, ``remote_message`` its message and ``remote_traceback`` the
    formatted traceback text. ``server``, ``function`` and ``stage`` say where
    it happened; ``index`` is the item's position for ``map`` calls.
    """

    def __init__(
        self,
        remote_type: str,
        remote_message: str,
        remote_traceback: str = "",
        *,
        server: str = "",
        function: str = "",
        stage: int = 0,
        index: int | None = None,
    ) -> None:
        if server and function and "." not in function:
            where = f"{server}.{function}"
        else:
            where = function or server
        place = f" at {where}" if where else ""
        if stage:
            place += f" (stage {stage})"
        if index is not None:
            place += f" [item {index}]"
        super().__init__(f"{remote_type}{place}: {remote_message}")
        self.remote_type = remote_type
        self.remote_message = remote_message
        self.remote_traceback = remote_traceback
        self.server = server
        self.function = function
        self.stage = stage
        self.index = index


class UnknownFunction(RemoteError):
    """The server does not define the function that was called."""


class BadResult(RemoteError):
    """A user function returned something other than ``bytes``."""


class JobLost(RemoteError):
    """A job whose worker died with it too many times; it is not retried again."""


class DependencyError(RemoteError):
    """A shipped function needs a package its worker lacks, or has at another version.

    ``package`` is the distribution, ``wanted`` the client's version,
    ``found`` the worker's (None: not installed), ``host`` and ``worker``
    where; ``detail`` the installer's message when building an environment
    for the function failed. The job did not run on that worker.
    """

    package: str = ""
    wanted: str = ""
    found: str | None = None
    host: str = ""
    worker: str = ""
    detail: str = ""

    @classmethod
    def about(
        cls,
        package: str,
        wanted: str,
        found: str | None,
        *,
        host: str = "",
        worker: str = "",
        detail: str = "",
        function: str = "",
    ) -> DependencyError:
        """The error for ``package``: ``wanted`` by the client, ``found`` on the worker."""
        have = "it is not installed" if found is None else f"it has {found}"
        message = (
            f"worker {worker!r} on host {host!r} cannot run this function: "
            f"it needs {package}=={wanted} and {have}"
        )
        if detail:
            message += f"; building an environment for it failed: {detail}"
        error = cls("palm.DependencyError", message, function=function)
        error.package, error.wanted, error.found = package, wanted, found
        error.host, error.worker, error.detail = host, worker, detail
        return error


class MalformedJob(RemoteError, ProtocolError):
    """A job message the server could not read (a :class:`ProtocolError` it sent back)."""


_BY_NAME: dict[str, type[RemoteError]] = {
    "palm.ProtocolError": MalformedJob,
    "palm.UnknownFunction": UnknownFunction,
    "palm.BadResult": BadResult,
    "palm.JobLost": JobLost,
    "palm.PayloadTooLarge": RemoteError,
}


def remote_error(
    remote_type: str,
    remote_message: str,
    remote_traceback: str = "",
    *,
    server: str = "",
    function: str = "",
    stage: int = 0,
    index: int | None = None,
) -> RemoteError:
    """Rebuild the most specific :class:`RemoteError` for fields that travelled."""
    cls = _BY_NAME.get(remote_type, RemoteError)
    return cls(
        remote_type,
        remote_message,
        remote_traceback,
        server=server,
        function=function,
        stage=stage,
        index=index,
    )
