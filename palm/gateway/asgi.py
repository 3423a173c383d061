"""The gateway as an ASGI app: the job route on the event loop, the rest in Flask.

``create_asgi_app()`` is what palm's gunicorn worker class
(:class:`palm.gateway.worker.EdgeWorker`) serves. A well-formed
``POST /<service>/<function>`` for a parallel service is answered on the
event loop: the body is read, the job goes out through one
:class:`~palm.call.aio.AsyncSharedClient` per service and the result is
written back when it arrives, with no thread involved, so a gateway process
holds as many requests in flight as arrive and the jobs of the requests that
arrive together travel together. Every other request (the other routes,
standalone and function services, anything not plainly well formed) goes to
the Flask app from :func:`palm.gateway.app.create_app` through a WSGI adapter and
its pool of threads; both paths give the same answers, headers and metrics.
"""

from __future__ import annotations

import asyncio
import gc
import logging
from collections.abc import Awaitable, Callable, MutableMapping
from time import perf_counter
from typing import Any

from a2wsgi import WSGIMiddleware
from flask import Flask

from palm.call.aio import AsyncSharedClient
from palm.gateway.app import REQUEST_ID, create_app, describe_error
from palm.gateway.auth import Authenticator, Denied
from palm.gateway.job_route import RULE, JobRequests

__all__ = ["EdgeApp", "create_asgi_app", "settle_heap"]

log = logging.getLogger("gateway")

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

#: The content type of every result.
_OCTET_STREAM = (b"content-type", b"application/octet-stream")

#: Threads per gateway process for the requests that go to Flask.
DEFAULT_WSGI_THREADS = 32


class EdgeApp:
    """ASGI app: parallel jobs on the event loop, everything else in Flask."""

    def __init__(self, flask_app: Flask, *, wsgi_threads: int = DEFAULT_WSGI_THREADS) -> None:
        settings: dict[str, Any] = flask_app.config["PALM"]
        self.flask_app = flask_app
        self.metrics = flask_app.extensions["palm"]["metrics"]
        self.specs = {
            name: spec for name, spec in settings["services"].items() if spec["kind"] == "parallel"
        }
        self.timeout_s: float = settings["timeout_s"]
        self.route = JobRequests(
            self.specs, self.metrics, settings["max_payload_bytes"], describe_error, REQUEST_ID
        )
        self.wsgi = WSGIMiddleware(_terminated(flask_app), workers=wsgi_threads)
        self.auth: Authenticator = flask_app.extensions["palm"]["auth"]
        self.clients: dict[str, AsyncSharedClient] = {}
        self._flush_due = False
        # API keys being looked up in Redis, by raw Authorization header
        self._lookups: dict[bytes, asyncio.Future[None]] = {}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind == "http":
            try:
                request = self._match(scope)
            except Exception as exc:  # what a client sent never makes a 500
                await self._answer(*self.route.unparsable(exc), "", send)
                return
            if request is not None:
                service, function, request_id, raw_id, authorization = request
                # a key checked a moment ago answers from memory: no coroutine for it
                if self.auth.admits(scope["path"], authorization) or await self._allowed(
                    scope, authorization, request_id, send
                ):
                    await self._job(service, function, request_id, raw_id, receive, send)
                return
        elif kind == "lifespan":
            await self._lifespan(receive, send)
            return
        await self.wsgi(scope, receive, send)  # type: ignore[arg-type]

    def _match(self, scope: Scope) -> tuple[str, str, str, bytes, bytes | None] | None:
        """(service, function, request id, the id as the response's header value,
        Authorization header) for a request the event loop answers: the headers are
        read once, here."""
        length: str | None = None
        raw_id = b""
        authorization: bytes | None = None
        for name, value in scope["headers"]:
            if name == b"content-length":
                length = value.decode("latin-1")
            elif name == b"x-request-id":
                raw_id = value
            elif name == b"authorization":
                authorization = value
            elif name == b"transfer-encoding":
                return None  # a body of unknown length: Flask reads it
        route = self.route.match(scope["method"], scope["path"], length)
        if route is None:
            return None
        if raw_id:
            request_id = raw_id.decode("latin-1")
        else:
            request_id = self.route.new_request_id()
            raw_id = request_id.encode()
        return route[0], route[1], request_id, raw_id, authorization

    async def _allowed(
        self, scope: Scope, header: bytes | None, request_id: str, send: Send
    ) -> bool:
        """The API key check (:mod:`palm.gateway.auth`) of the ``Authorization`` header
        when :meth:`Authenticator.admits` could not pass it from memory; answers the
        request when it fails."""
        path: str = scope["path"]
        lookup = self._lookups.get(header) if header is not None else None
        if lookup is not None:  # this key is being looked up in Redis: wait for that
            await asyncio.shield(lookup)
            if self.auth.admits(path, header):
                return True
        authorization = header.decode("latin-1") if header is not None else None
        try:
            if self.auth.needs_redis(path, authorization):
                await self._look_up(header, path, authorization)
            else:
                self.auth.check(path, authorization)
        except Denied as denied:
            body = denied.body()
            raw = [(name.lower().encode(), value.encode()) for name, value in denied.headers]
            raw += [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
                (b"x-request-id", request_id.encode()),
            ]
            await send({"type": "http.response.start", "status": denied.status, "headers": raw})
            await send({"type": "http.response.body", "body": body})
            return False
        return True

    async def _look_up(self, header: bytes | None, path: str, authorization: str | None) -> None:
        """:meth:`Authenticator.check` in a thread (it asks Redis). When a cached key
        expires, every request in flight with it would ask at once: the first one
        asks, the others wait for its answer (:meth:`_allowed`)."""
        done: asyncio.Future[None] | None = None
        if header is not None and header not in self._lookups:
            done = self._lookups[header] = asyncio.get_running_loop().create_future()
        try:
            await asyncio.to_thread(self.auth.check, path, authorization)
        finally:
            if done is not None:
                del self._lookups[header]  # type: ignore[arg-type]
                done.set_result(None)

    async def _job(
        self,
        service: str,
        function: str,
        request_id: str,
        raw_id: bytes,
        receive: Receive,
        send: Send,
    ) -> None:
        started = perf_counter()
        message = await receive()
        if message.get("more_body", False) or message["type"] != "http.request":
            payload = await self._rest_of_body(message, receive)
            if payload is None:
                return  # the client went away before sending its body
        else:
            payload = message.get("body", b"")
        job_id = self.route.job_id()
        try:
            result = await self._client(service).eval(function, payload, request_id=request_id)
        except Exception as exc:
            token = REQUEST_ID.set(request_id)  # the failure's log line names the request
            try:
                body, status, headers = self.route.failure(service, function, exc)
            finally:
                REQUEST_ID.reset(token)
            await self._answer(body, status, headers, request_id, send)
            self._count(status, perf_counter() - started, service, type(exc).__name__)
            return
        await send({
            "type": "http.response.start",
            "status": 200,
            "headers": [
                _OCTET_STREAM,
                (b"x-palm-job-id", job_id.encode()),
                (b"content-length", str(len(result)).encode()),
                (b"x-request-id", raw_id),
            ],
        })  # fmt: skip
        await send({"type": "http.response.body", "body": result})
        self._count(200, perf_counter() - started, service, "ok")

    @staticmethod
    async def _rest_of_body(message: Message, receive: Receive) -> bytes | None:
        """The body of a request whose first message did not hold all of it; None when
        the client went away first."""
        chunks: list[bytes] = []
        while True:
            if message["type"] == "http.disconnect":
                return None
            chunks.append(message.get("body", b""))
            if not message.get("more_body", False):
                return b"".join(chunks)
            message = await receive()

    def _count(self, status: int, elapsed_s: float, service: str, outcome: str) -> None:
        """Tally an answered job request and its job's outcome; the metrics are written
        when this turn of the event loop ends (one write per label set for all the
        turn answered)."""
        self.metrics.tally_answer(RULE, "POST", status, elapsed_s, service, outcome)
        if not self._flush_due:
            self._flush_due = True
            asyncio.get_running_loop().call_soon(self._flush_metrics)

    def _flush_metrics(self) -> None:
        self._flush_due = False
        self.metrics.flush()

    @staticmethod
    async def _answer(
        body: bytes, status: int, headers: list[tuple[str, str]], request_id: str, send: Send
    ) -> None:
        raw = [(name.lower().encode(), value.encode()) for name, value in headers]
        raw.append((b"content-length", str(len(body)).encode()))
        if request_id:
            raw.append((b"x-request-id", request_id.encode("latin-1", "replace")))
        await send({"type": "http.response.start", "status": status, "headers": raw})
        await send({"type": "http.response.body", "body": body})

    def _client(self, service: str) -> AsyncSharedClient:
        client = self.clients.get(service)
        if client is None:
            spec = self.specs[service]
            client = self.clients[service] = AsyncSharedClient(
                spec["push_address"],
                spec["pull_address"],
                spec["db_address"],
                spec["server_name"],
                timeout_s=self.timeout_s,
            )
        return client

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                settle_heap()
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                self.metrics.flush()
                self.close()
                await send({"type": "lifespan.shutdown.complete"})
                return

    def close(self) -> None:
        clients, self.clients = self.clients, {}
        for client in clients.values():
            client.close()
        self.flask_app.extensions["palm"]["pool"].close()


def settle_heap() -> None:
    """Move every object alive now (the app, Flask, the modules: tens of thousands) out
    of the garbage collector's sight.

    A full collection otherwise walks them all, about 60 ms during which the event loop
    answers no request (the p99 under load), and every younger collection pays a
    little for them too. Objects made later, per request, are collected as before.
    """
    gc.collect()
    gc.freeze()


def _terminated(app: Flask) -> Callable[..., Any]:
    """The Flask app told that ``wsgi.input`` ends with the body.

    The adapter's input stream ends where the request's body ends, chunked or
    not (as gunicorn's does); without the flag Werkzeug reads nothing from a
    request without ``Content-Length``.
    """

    def wsgi_app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Any:
        environ["wsgi.input_terminated"] = True
        return app(environ, start_response)

    return wsgi_app


def create_asgi_app(config: dict[str, Any] | None = None) -> EdgeApp:
    """The gateway for an ASGI server; ``config`` as for :func:`palm.gateway.app.create_app`."""
    app = create_app(config)
    threads = int(app.config["PALM"].get("wsgi_threads") or DEFAULT_WSGI_THREADS)
    return EdgeApp(app, wsgi_threads=threads)
