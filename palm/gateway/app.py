"""The HTTP gateway: a Flask app that turns HTTP requests into palm jobs.

Routes
------
``POST /<service>/<function>``
    The request body is the payload; the answer is the result bytes (200),
    with ``X-Palm-Job-Id``. Well-formed requests to this route are answered
    by :class:`palm.gateway.job_route.JobRoute` in front of Flask (for parallel
    services under palm's worker class, on the event loop by
    :mod:`palm.gateway.asgi`), the rest by the Flask view below; all give the same
    answers.
``POST /jobs/<service>/<function>``
    Runs the job in the background: 202 ``{"job_id": ...}``.
``POST /jobs/map/<service>/<function>``
    ``/map`` as a background job (the same JSON array body): 202
    ``{"job_id": ..., "total": <items>}``; its result is ``/map``'s JSON array.
``GET /jobs/<job_id>``
    ``{"job_id", "status": "pending"|"done"|"failed", "service", "function"}``
    plus ``"result_base64"`` when done or ``"error"``/``"detail"`` when failed;
    a map job also has ``"kind": "map"`` and ``"progress": {"done", "total"}``,
    updated as its results arrive.
``GET /jobs/<job_id>/result``
    The raw result bytes (200), 202 while pending, the job's error when failed.
``POST /map/<service>/<function>``
    The body is a JSON array. Each item is sent as its JSON text (UTF-8
    bytes) and the answer is a JSON array of the results in order: a result
    that parses as JSON is returned as that value, any other result as a
    string holding its base64 encoding. Wherever the gateway writes JSON, an
    integer of more than 4,300 digits is a string of its decimal digits
    (:mod:`palm.gateway.encoding`).
``GET /healthz``, ``GET /metrics`` (Prometheus text format).
``GET /dashboard``
    The live dashboard (:mod:`palm.gateway.dashboard`); its data at
    ``GET /dashboard/api/snapshot``.

Every route but ``/healthz`` and the dashboard's page and static files needs
``Authorization: Bearer <API key>`` unless ``auth`` is ``"open"``
(:mod:`palm.gateway.auth`): 401 without a valid key, 429 over the key's rate, 503
when the keys cannot be checked.

Errors are JSON ``{"error": ..., "detail": ...}``: 400 a body or request the
gateway cannot parse (at any depth; never a 500 for what a client sent), 404
unknown service, function or path, 413 payload over ``max_payload_bytes``, 502
an exception in user code (``remote_type``, ``remote_message``), 503 no Redis
for ``/jobs``, 504 timeout. The ``x-request-id`` header (made up when absent)
is echoed back and set in the logging context of the request.
"""

from __future__ import annotations

import base64
import builtins
import contextvars
import logging
import os
import time
import uuid
from collections.abc import Callable, Mapping
from typing import Any

from flask import Flask, Response, g, jsonify, request
from werkzeug.exceptions import HTTPException

from palm.errors import (
    PalmError,
    PayloadTooLarge,
    RemoteError,
    StateError,
    UnknownFunction,
)
from palm.gateway.auth import from_settings, guard
from palm.gateway.body import discard_body
from palm.gateway.clients import ClientPool
from palm.gateway.dashboard import SnapshotSource
from palm.gateway.dashboard import register as register_dashboard
from palm.gateway.encoding import MalformedBody, parse_items, result_json
from palm.gateway.job_route import JobRoute
from palm.gateway.jobs import JobStore
from palm.gateway.metrics import CONTENT_TYPE_LATEST, GatewayMetrics
from palm.gateway.pages import PageMount
from palm.gateway.settings import resolve

__all__ = ["REQUEST_ID", "RequestIdFilter", "create_app", "describe_error", "map_payloads"]

log = logging.getLogger("gateway")

REQUEST_ID: contextvars.ContextVar[str] = contextvars.ContextVar("palm_request_id", default="-")


class RequestIdFilter(logging.Filter):
    """Adds ``request_id`` to every record (attach it to a handler)."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.request_id = REQUEST_ID.get()
        return True


class GatewayError(Exception):
    def __init__(self, status: int, error: str, detail: str, **extra: Any) -> None:
        super().__init__(detail)
        self.status = status
        self.error = error
        self.detail = detail
        self.extra = extra


def describe_error(exc: BaseException) -> dict[str, Any]:
    """The HTTP status and JSON body for an exception raised by a palm call."""
    if isinstance(exc, GatewayError):
        return {"status": exc.status, "error": exc.error, "detail": exc.detail, **exc.extra}
    if isinstance(exc, UnknownFunction):
        return {"status": 404, "error": "unknown function", "detail": exc.remote_message}
    if isinstance(exc, PayloadTooLarge):
        return {"status": 413, "error": "payload too large", "detail": str(exc)}
    if isinstance(exc, RemoteError) and exc.remote_type == "palm.PayloadTooLarge":
        # refused by the server or master: too large there, whatever the gateway allows
        return {"status": 413, "error": "payload too large", "detail": exc.remote_message}
    if isinstance(exc, builtins.TimeoutError):
        return {"status": 504, "error": "timeout", "detail": str(exc) or "no reply in time"}
    if isinstance(exc, RemoteError):
        body: dict[str, Any] = {
            "status": 502,
            "error": "remote error",
            "detail": str(exc),
            "remote_type": exc.remote_type,
            "remote_message": exc.remote_message,
        }
        if exc.index is not None:
            body["index"] = exc.index
        return body
    if isinstance(exc, StateError):
        return {"status": 503, "error": "state unavailable", "detail": str(exc)}
    if isinstance(exc, PalmError):
        return {"status": 502, "error": type(exc).__name__, "detail": str(exc)}
    return {"status": 500, "error": "internal error", "detail": type(exc).__name__}


def error_response(info: Mapping[str, Any]) -> Response:
    body = {key: value for key, value in info.items() if key != "status"}
    response = jsonify(body)
    response.status_code = int(info["status"])
    return response


def map_payloads(body: bytes) -> list[bytes]:
    """The items of a ``/map`` body, or a 400 :class:`GatewayError` for any body it cannot parse.

    An unexpected exception while parsing is logged and answered 400 too: what
    a client sent never makes a 500.
    """
    try:
        return parse_items(body)
    except MalformedBody as exc:
        raise GatewayError(400, "malformed body", str(exc)) from None
    except Exception as exc:
        log.exception("unexpected error parsing a /map body")
        raise GatewayError(400, "malformed body", f"cannot parse: {type(exc).__name__}") from None


def results_response(results: list[bytes]) -> Response:
    """The JSON array answering a ``/map``: each result as :func:`result_json` writes it."""
    text = "[" + ",".join(result_json(result) for result in results) + "]\n"
    return Response(text, status=200, content_type="application/json")


def create_app(config: dict[str, Any] | None = None) -> Flask:
    """Build the gateway. ``config`` overrides ``PALM_GATEWAY_*`` variables."""
    settings = resolve(config)
    app = Flask("palm.gateway")
    app.config["MAX_CONTENT_LENGTH"] = settings["max_payload_bytes"]
    app.config["PALM"] = settings
    services: dict[str, dict[str, Any]] = settings["services"]
    pool = ClientPool(services, settings["timeout_s"])
    jobs = (
        JobStore(settings["redis_url"], settings["job_ttl_s"], settings["job_threads"])
        if settings["redis_url"]
        else None
    )
    metrics = GatewayMetrics()
    if settings["redis_url"]:
        cluster = settings["cluster"] or os.environ.get("PALM_CLUSTER", "default")
        metrics.watch_palm(settings["redis_url"], cluster)
    auth = from_settings(settings)
    # the live dashboard (/dashboard), reading the deployment's counters and logs
    register_dashboard(
        app,
        SnapshotSource(
            settings["redis_url"],
            settings["cluster"] or os.environ.get("PALM_CLUSTER", "default"),
            {name: spec["kind"] for name, spec in services.items()},
        )
        if settings["redis_url"]
        else None,
    )
    app.extensions["palm"] = {"pool": pool, "jobs": jobs, "metrics": metrics, "auth": auth}

    def known(service: str) -> None:
        if service not in services:
            raise GatewayError(404, "unknown service", f"no service named {service!r}")

    def call(service: str, function: str, payload: bytes) -> bytes:
        outcome = "ok"
        try:
            with pool.borrow(service) as caller:
                return caller.call(function, payload, REQUEST_ID.get())
        except Exception as exc:
            outcome = type(exc).__name__
            raise
        finally:
            metrics.jobs.labels(service, outcome).inc()

    @app.before_request
    def start_request() -> None:
        g.started = time.perf_counter()
        request_id = request.headers.get("x-request-id") or uuid.uuid4().hex
        g.request_id = request_id
        g.context_token = REQUEST_ID.set(request_id)

    @app.after_request
    def finish_request(response: Response) -> Response:
        rule = request.url_rule.rule if request.url_rule is not None else "unmatched"
        elapsed_s = time.perf_counter() - g.get("started", time.perf_counter())
        metrics.observe(rule, request.method, response.status_code, elapsed_s)
        response.headers["x-request-id"] = g.get("request_id", "")
        return response

    @app.teardown_request
    def reset_context(_exc: BaseException | None) -> None:
        token = g.pop("context_token", None)
        if token is not None:
            REQUEST_ID.reset(token)

    @app.errorhandler(HTTPException)
    def http_error(exc: HTTPException) -> Response:
        status = exc.code or 500
        if status == 413:
            discard_body(request.environ, 4 * settings["max_payload_bytes"])
        names = {413: "payload too large", 404: "not found", 405: "method not allowed"}
        error = names.get(status, (exc.name or "error").lower())
        return error_response({"status": status, "error": error, "detail": exc.description})

    @app.errorhandler(Exception)
    def palm_error(exc: Exception) -> Response:
        info = describe_error(exc)
        if info["status"] == 500:
            log.exception("unexpected error in the gateway")
        else:
            log.info(
                "%s %s -> %s %s", request.method, request.path, info["status"], info.get("detail")
            )
        return error_response(info)

    @app.get("/healthz")
    def healthz() -> Response:
        return jsonify({"status": "ok", "services": sorted(services)})

    @app.get("/metrics")
    def metrics_page() -> Response:
        return Response(metrics.render(), content_type=CONTENT_TYPE_LATEST)

    @app.post("/<service>/<function>")
    def run_job(service: str, function: str) -> Response:
        known(service)
        payload = request.get_data(cache=False)
        job_id = uuid.uuid4().hex
        log.debug("job %s: %s.%s (%d bytes)", job_id, service, function, len(payload))
        result = call(service, function, payload)
        response = Response(result, status=200, content_type="application/octet-stream")
        response.headers["X-Palm-Job-Id"] = job_id
        return response

    @app.post("/map/<service>/<function>")
    def run_map(service: str, function: str) -> Response:
        known(service)
        payloads = map_payloads(request.get_data(cache=False))
        outcome = "ok"
        try:
            with pool.borrow(service) as caller:
                results = caller.map(function, payloads)
        except Exception as exc:
            outcome = type(exc).__name__
            raise
        finally:
            metrics.jobs.labels(service, outcome).inc(len(payloads))
        return results_response(results)

    def job_store() -> JobStore:
        if jobs is None:
            raise GatewayError(503, "no job store", "the gateway has no redis_url configured")
        return jobs

    @app.post("/jobs/<service>/<function>")
    def submit_job(service: str, function: str) -> Response:
        known(service)
        store = job_store()
        payload = request.get_data(cache=False)
        request_id = g.request_id

        def run() -> bytes:
            token = REQUEST_ID.set(request_id)
            try:
                return call(service, function, payload)
            finally:
                REQUEST_ID.reset(token)

        job_id = store.submit(service, function, run, describe_error)
        response = jsonify({"job_id": job_id})
        response.status_code = 202
        response.headers["X-Palm-Job-Id"] = job_id
        response.headers["Location"] = f"/jobs/{job_id}"
        return response

    @app.post("/jobs/map/<service>/<function>")
    def submit_map(service: str, function: str) -> Response:
        known(service)
        store = job_store()
        payloads = map_payloads(request.get_data(cache=False))
        request_id = g.request_id

        def run(report: Callable[[int], None]) -> bytes:
            token = REQUEST_ID.set(request_id)
            outcome = "ok"
            try:
                with pool.borrow(service) as caller:
                    results = caller.map(function, payloads, report)
                return results_response(results).get_data()
            except Exception as exc:
                outcome = type(exc).__name__
                raise
            finally:
                metrics.jobs.labels(service, outcome).inc(len(payloads))
                REQUEST_ID.reset(token)

        job_id = store.submit_map(service, function, len(payloads), run, describe_error)
        response = jsonify({"job_id": job_id, "total": len(payloads)})
        response.status_code = 202
        response.headers["X-Palm-Job-Id"] = job_id
        response.headers["Location"] = f"/jobs/{job_id}"
        return response

    def load_job(job_id: str) -> dict[str, bytes]:
        record = job_store().get(job_id)
        if record is None:
            raise GatewayError(404, "unknown job", f"no job {job_id!r} (or it expired)")
        return record

    def job_error(record: dict[str, bytes]) -> dict[str, Any]:
        info: dict[str, Any] = {
            key.removeprefix("error_"): value.decode()
            for key, value in record.items()
            if key.startswith("error_")
        }
        info["status"] = int(info.get("status", 502))
        return info

    @app.get("/jobs/<job_id>")
    def job_status(job_id: str) -> Response:
        record = load_job(job_id)
        status = record["status"].decode()
        body: dict[str, Any] = {
            "job_id": job_id,
            "status": status,
            "service": record.get("service", b"").decode(),
            "function": record.get("function", b"").decode(),
        }
        if "total" in record:  # a map: how far it got
            body["kind"] = "map"
            body["progress"] = {
                "done": int(record.get("done", b"0")),
                "total": int(record["total"]),
            }
        if status == "done":
            body["result_base64"] = base64.b64encode(record.get("result", b"")).decode("ascii")
        elif status == "failed":
            error = job_error(record)
            body["http_status"] = error.pop("status")
            body.update(error)
        return jsonify(body)

    @app.get("/jobs/<job_id>/result")
    def job_result(job_id: str) -> Response:
        record = load_job(job_id)
        status = record["status"].decode()
        if status == "done":
            kind = "application/json" if "total" in record else "application/octet-stream"
            response = Response(record.get("result", b""), content_type=kind)
            response.headers["X-Palm-Job-Id"] = job_id
            return response
        if status == "failed":
            return error_response(job_error(record))
        response = jsonify({"job_id": job_id, "status": status})
        response.status_code = 202
        return response

    app.wsgi_app = JobRoute(  # type: ignore[method-assign]
        app.wsgi_app,
        services,
        call,
        metrics,
        settings["max_payload_bytes"],
        describe_error,
        REQUEST_ID,
    )
    # every route, the job route above included, behind the API key check
    app.wsgi_app = guard(app.wsgi_app, auth, 4 * settings["max_payload_bytes"])  # type: ignore[method-assign, assignment]
    # services' static pages (``page`` in palm.yaml), public, in front of the key check
    pages = {name: spec["page"] for name, spec in services.items() if spec.get("page")}
    if pages:
        app.wsgi_app = PageMount(app.wsgi_app, pages)  # type: ignore[method-assign]
    return app
