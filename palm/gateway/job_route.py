"""The gateway's busiest route, ``POST /<service>/<function>``, answered at the WSGI level.

Every request through the edge that runs one job takes this route, so its
cost per request bounds what the gateway can serve. :class:`JobRoute` wraps
the Flask app's ``wsgi_app`` (the middleware pattern Flask documents) and
answers a well-formed job request itself: the request id, the job, the
result or the JSON error, and the same metrics the Flask hooks record, with
none of the request-context machinery. Anything else, including a job
request it does not recognise as plainly well formed (no ``Content-Length``,
a body over the limit, a path outside ASCII), goes on to Flask, whose
routes and error handlers give the same answers the slow way.
"""

from __future__ import annotations

import itertools
import json
import logging
import uuid
from collections.abc import Callable, Iterable
from http import HTTPStatus
from time import perf_counter
from typing import Any

from palm.gateway.metrics import GatewayMetrics

__all__ = ["RULE", "JobRequests", "JobRoute"]

log = logging.getLogger("gateway")

#: The route's rule, as Flask names it in metrics.
RULE = "/<service>/<function>"

StartResponse = Callable[..., Any]
WSGIApp = Callable[[dict[str, Any], StartResponse], Iterable[bytes]]


def _status_line(status: int) -> str:
    try:
        return f"{status} {HTTPStatus(status).phrase}"
    except ValueError:
        return f"{status} Error"


class JobRequests:
    """What the job route's two front ends share: which requests it takes, ids, errors."""

    def __init__(
        self,
        services: Iterable[str],
        metrics: GatewayMetrics,
        max_payload_bytes: int,
        describe_error: Callable[[BaseException], dict[str, Any]],
        request_id: Any,
    ) -> None:
        self.services = frozenset(services)
        self.metrics = metrics
        self.max_payload_bytes = max_payload_bytes
        self.describe_error = describe_error
        self.request_id = request_id  # the context variable the logs read
        # job ids unique across gateway processes without a random draw per request
        self._prefix = uuid.uuid4().hex[:24]
        self._count = itertools.count()

    def match(self, method: str, path: str, length: str | None) -> tuple[str, str, int] | None:
        """(service, function, body length) for a request this route answers."""
        if method != "POST" or not path.startswith("/") or not path.isascii():
            return None
        service, _, function = path[1:].partition("/")
        if service not in self.services or not function or "/" in function:
            return None
        try:
            size = int(length or "")
        except ValueError:
            return None
        if size < 0 or size > self.max_payload_bytes:
            return None
        return service, function, size

    def job_id(self) -> str:
        return f"{self._prefix}{next(self._count):08x}"

    def new_request_id(self) -> str:
        """An id for a request that came without one: unique as :meth:`job_id` is
        (the same counter), without the random draw of a UUID per request."""
        return self.job_id()

    def unparsable(self, exc: Exception) -> tuple[bytes, int, list[tuple[str, str]]]:
        """The 400 answer for a request whose parsing raised ``exc`` unexpectedly (logged)."""
        log.error("unexpected error parsing a job request", exc_info=exc)
        body = {"error": "malformed request", "detail": f"cannot parse: {type(exc).__name__}"}
        return json.dumps(body).encode() + b"\n", 400, [("Content-Type", "application/json")]

    def failure(
        self, service: str, function: str, exc: Exception
    ) -> tuple[bytes, int, list[tuple[str, str]]]:
        """The JSON error answer for a job that raised ``exc``."""
        info = self.describe_error(exc)
        status = int(info["status"])
        if status == 500:
            log.error("unexpected error in the gateway", exc_info=exc)
        else:
            log.info("POST /%s/%s -> %s %s", service, function, status, info.get("detail"))
        body = {key: value for key, value in info.items() if key != "status"}
        text = json.dumps(body).encode() + b"\n"
        return text, status, [("Content-Type", "application/json")]


class JobRoute(JobRequests):
    """WSGI middleware running ``POST /<service>/<function>`` without Flask."""

    def __init__(
        self,
        app: WSGIApp,
        services: Iterable[str],
        call: Callable[[str, str, bytes], bytes],
        metrics: GatewayMetrics,
        max_payload_bytes: int,
        describe_error: Callable[[BaseException], dict[str, Any]],
        request_id: Any,
    ) -> None:
        super().__init__(services, metrics, max_payload_bytes, describe_error, request_id)
        self.app = app
        self.call = call

    def __call__(self, environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        started = perf_counter()
        try:
            route = self.match(
                environ.get("REQUEST_METHOD", ""),
                environ.get("PATH_INFO", ""),
                environ.get("CONTENT_LENGTH"),
            )
            if route is None:
                return self.app(environ, start_response)
            service, function, length = route
            request_id: str = environ.get("HTTP_X_REQUEST_ID") or self.new_request_id()
            payload: bytes = environ["wsgi.input"].read(length) if length else b""
        except Exception as exc:  # what a client sent never makes a 500
            body, status, headers = self.unparsable(exc)
            headers.append(("Content-Length", str(len(body))))
            start_response(_status_line(status), headers)
            self.metrics.observe(RULE, "POST", status, perf_counter() - started)
            return [body]
        token = self.request_id.set(request_id)
        try:
            body, status, headers = self._run(service, function, payload)
        finally:
            self.request_id.reset(token)
        headers.append(("Content-Length", str(len(body))))
        headers.append(("x-request-id", request_id))
        start_response(_status_line(status), headers)
        self.metrics.observe(RULE, "POST", status, perf_counter() - started)
        return [body]

    def _run(
        self, service: str, function: str, payload: bytes
    ) -> tuple[bytes, int, list[tuple[str, str]]]:
        job_id = self.job_id()
        try:
            result = self.call(service, function, payload)
        except Exception as exc:
            return self.failure(service, function, exc)
        headers = [("Content-Type", "application/octet-stream"), ("X-Palm-Job-Id", job_id)]
        return result, 200, headers
