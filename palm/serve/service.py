"""What every palm server and worker shares: its name, logger, user functions,
and the rule that turns a call into result bytes or an error that travels.

A user function is any public method a subclass defines (not one of the
framework's own methods) taking the message bytes and returning bytes.
"""

from __future__ import annotations

import logging
import traceback
from collections.abc import Callable
from typing import Any, cast

from palm.errors import ConfigError, StateError
from palm.serve.views import as_call_payloads, kept_view, restore_received
from palm.state.cache import Cache
from palm.state.logs import current_request_id
from palm.wire.protocol import ErrorInfo, Header, all_bytes, request_id_of

__all__ = ["Service", "split_function", "unknown_message"]


def split_function(function: str) -> tuple[str, str]:
    """``'server.foo'`` -> ``('server', 'foo')``; ``'foo'`` -> ``('', 'foo')``."""
    server, _, name = function.rpartition(".")
    return server, name


def unknown_message(owner: str, function: str, known: list[str] | set[str]) -> str:
    """Why ``owner`` cannot run ``function``: a server name that is not its own is
    named as such (a misspelled server), else the function and the ones it has."""
    server, name = split_function(function)
    have = ", ".join(sorted(known)) or "(none)"
    if server and server != owner:
        return (
            f"no server {server!r} here: this is {owner!r} (functions: {have}); "
            f"call {owner}.{name} or check the server name"
        )
    return f"{owner!r} has no function {name!r}; it has: {have}"


class Service:
    """Base of palm's servers and workers: name, logger and user functions.

    Classes that set ``_palm_framework = True`` in their body are palm's own:
    their public methods are never user functions.
    """

    _palm_framework = True
    #: whether results may stay memoryviews of immutable buffers (a worker sends
    #: them as they are; others want bytes)
    _sends_views = False

    def __init__(self, name: str) -> None:
        if not isinstance(name, str) or not name or "." in name:
            raise ConfigError(f"server name must be a non-empty string without dots, got {name!r}")
        self.name = name
        self.logger = logging.getLogger(f"palm.{name}")
        self._functions = self._find_functions()

    @classmethod
    def _framework_classes(cls) -> list[type]:
        return [k for k in cls.__mro__ if vars(k).get("_palm_framework") or k is object]

    @classmethod
    def _reserved(cls) -> set[str]:
        names: set[str] = set()
        for klass in cls._framework_classes():
            names.update(n for n in vars(klass) if not n.startswith("_"))
        return names

    def _find_functions(self) -> dict[str, Callable[[bytes], Any]]:
        reserved = self._reserved()
        framework = self._framework_classes()
        found: dict[str, Callable[[bytes], Any]] = {}
        for klass in type(self).__mro__:
            if klass in framework:
                continue
            for attr, value in vars(klass).items():
                if attr.startswith("_") or attr in reserved or attr in found:
                    continue
                if callable(value):
                    found[attr] = getattr(self, attr)
        return found

    # the shared cache ------------------------------------------------------------

    def shared_cache(self) -> Cache:
        """Where ``set``/``get``/``delete`` go; subclasses say (StateError when nowhere)."""
        raise StateError(f"{self.name} has no shared cache: give it a Redis URL or db_address")

    def set(self, value: bytes, key: str | None = None) -> str:
        """Store ``value`` in the cluster's shared cache; returns its key."""
        return self.shared_cache().set(value, key)

    def get(self, key: str) -> bytes | None:
        """The cached value under ``key``, or None."""
        return self.shared_cache().get(key)

    def delete(self, key: str) -> bool:
        """Remove ``key`` from the shared cache; False if it was not there."""
        return self.shared_cache().delete(key)

    @property
    def functions(self) -> list[str]:
        """The user functions this service answers, sorted."""
        return sorted(self._functions)

    def resolve(self, function: str) -> Callable[[bytes], Any] | None:
        """The callable for ``'foo'`` or ``'<name>.foo'``, or None."""
        server, name = split_function(function)
        if server and server != self.name:
            return None
        return self._functions.get(name)

    def unknown(self, function: str, offset: int = 0, stage: int = 0) -> ErrorInfo:
        return ErrorInfo(
            offset,
            "palm.UnknownFunction",
            unknown_message(self.name, function, self.functions),
            "",
            self.name,
            stage,
        )

    def unknown_all(self, header: Header, count: int) -> list[ErrorInfo]:
        """An unknown-function error for each of the ``count`` jobs of ``header``."""
        return [self.unknown(header.function, i, header.stage) for i in range(count)]

    def call_all(
        self,
        func: Callable[[bytes], Any],
        header: Header,
        payloads: list[bytes],
        *,
        function: str | None = None,
        passed: dict[int, ErrorInfo] | None = None,
    ) -> tuple[list[bytes], list[ErrorInfo]]:
        """Run ``func`` on every payload of a message: results, and errors for the failed.

        ``function`` names the call in logs (default: the header's); a payload
        with an error in ``passed`` (it failed at an earlier stage) keeps it
        and is not run. ``func`` gets each payload as it wants it
        (:mod:`palm.serve.views`); a result that is the payload it was given
        comes back as the received frame's view, to send on by reference.
        """
        given, received = as_call_payloads(func, payloads)
        results, errors = self._call_each(func, header, given, function, passed)
        return restore_received(results, received), errors

    def _call_each(
        self,
        func: Callable[[bytes], Any],
        header: Header,
        payloads: list[bytes],
        function: str | None,
        passed: dict[int, ErrorInfo] | None,
    ) -> tuple[list[bytes], list[ErrorInfo]]:
        label = function or header.function
        results: list[bytes] = []
        errors: list[ErrorInfo] = []
        start = 0
        if (
            len(payloads) > 1
            and not passed
            and type(self).call is Service.call  # a subclass's call() sees every job
            and not _has_request_ids(header.extra)
        ):
            # the common case, a batch: one tight loop; the first job that raises
            # (if any) is answered here and the rest go through the careful path
            # below, each run once
            append = results.append
            failure: Exception | None = None
            try:
                for payload in payloads:
                    append(func(payload))
            except Exception as exc:
                failure = exc
            start = len(results)
            if not all_bytes(results):  # some result is not bytes: vet each
                checked = [self._as_bytes(r, label, i, header.stage) for i, r in enumerate(results)]
                results = [result for result, _ in checked]
                errors = [error for _, error in checked if error is not None]
            if failure is None:
                return results, errors
            failed, failed_error = self._failed(failure, label, start, header.stage)
            results.append(failed)
            errors.append(failed_error)
            start += 1
        for offset, payload in enumerate(payloads[start:], start):
            earlier = passed.get(offset) if passed else None
            if earlier is not None:
                results.append(b"")
                errors.append(earlier)
                continue
            result, error = self.call(
                func, label, payload, offset, header.stage, request_id_of(header.extra, offset)
            )
            results.append(result)
            if error is not None:
                errors.append(error)
        return results, errors

    def call(
        self,
        func: Callable[[bytes], Any],
        function: str,
        payload: bytes,
        offset: int,
        stage: int,
        request_id: object = None,
    ) -> tuple[bytes, ErrorInfo | None]:
        """Run one user call; never raises for user errors.

        ``request_id`` (from the HTTP edge) is in the logging context while it runs.
        """
        token = current_request_id.set(request_id) if isinstance(request_id, str) else None
        try:
            result = func(payload)
        except Exception as exc:
            self.logger.exception("%s.%s raised %s", self.name, function, type(exc).__name__)
            return b"", error_info(exc, offset, self.name, stage)
        finally:
            if token is not None:
                current_request_id.reset(token)
        return self._as_bytes(result, function, offset, stage)

    def _as_bytes(
        self, result: object, function: str, offset: int, stage: int
    ) -> tuple[bytes, ErrorInfo | None]:
        """A user call's result as bytes, or a palm.BadResult error for anything else."""
        if isinstance(result, bytes):
            return result, None
        if isinstance(result, memoryview) and self._sends_views:
            view = kept_view(result)
            if view is not None:
                return cast(bytes, view), None
        if isinstance(result, bytearray | memoryview):
            return bytes(result), None
        message = (
            f"{self.name}.{split_function(function)[1]} returned {type(result).__name__}, not bytes"
        )
        self.logger.error(message)
        return b"", ErrorInfo(offset, "palm.BadResult", message, "", self.name, stage)

    def _failed(
        self, exc: Exception, function: str, offset: int, stage: int
    ) -> tuple[bytes, ErrorInfo]:
        """The answer to a call that raised ``exc``."""
        self.logger.error("%s.%s raised %s", self.name, function, type(exc).__name__, exc_info=exc)
        return b"", error_info(exc, offset, self.name, stage)


def _has_request_ids(extra: dict[str, Any] | None) -> bool:
    return bool(extra) and ("request_id" in extra or "request_ids" in extra)  # type: ignore[operator]


def error_info(exc: BaseException, offset: int, server: str, stage: int) -> ErrorInfo:
    """An :class:`ErrorInfo` describing ``exc``, with its traceback text."""
    klass = type(exc)
    qualname = klass.__qualname__
    module = klass.__module__
    type_name = qualname if module == "builtins" else f"{module}.{qualname}"
    tb = "".join(traceback.format_exception(klass, exc, exc.__traceback__))
    return ErrorInfo(offset, type_name, str(exc), tb, server, stage)
