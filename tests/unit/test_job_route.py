"""Which requests the gateway answers in front of Flask, and how (in-process doubles)."""

from __future__ import annotations

import contextvars
import io
import json
from typing import Any

import pytest

from palm.errors import RemoteError, UnknownFunction
from palm.gateway.app import describe_error
from palm.gateway.job_route import RULE, JobRoute
from palm.gateway.metrics import GatewayMetrics

REQUEST_ID: contextvars.ContextVar[str] = contextvars.ContextVar("test_request_id", default="-")


class Recorder:
    """The app behind the route (Flask in the gateway) and the job runner, recorded."""

    def __init__(self) -> None:
        self.passed: list[str] = []
        self.calls: list[tuple[str, str, bytes, str]] = []

    def app(self, environ: dict[str, Any], start_response: Any) -> list[bytes]:
        self.passed.append(environ["PATH_INFO"])
        start_response("299 Passed", [])
        return [b"flask"]

    def call(self, service: str, function: str, payload: bytes) -> bytes:
        self.calls.append((service, function, payload, REQUEST_ID.get()))
        if function == "fail":
            raise RemoteError("ValueError", "cannot take it", function="tools.fail")
        if function == "nope":
            raise UnknownFunction("palm.UnknownFunction", "no function 'nope'")
        return payload[::-1]


def environ(method: str, path: str, body: bytes = b"", **extra: str) -> dict[str, Any]:
    env: dict[str, Any] = {
        "REQUEST_METHOD": method,
        "PATH_INFO": path,
        "wsgi.input": io.BytesIO(body),
        "CONTENT_LENGTH": str(len(body)),
    }
    env.update(extra)
    return env


@pytest.fixture
def route() -> tuple[JobRoute, Recorder, GatewayMetrics]:
    recorder = Recorder()
    metrics = GatewayMetrics()
    job_route = JobRoute(
        recorder.app, ["tools"], recorder.call, metrics, 100, describe_error, REQUEST_ID
    )
    return job_route, recorder, metrics


def run(job_route: JobRoute, env: dict[str, Any]) -> tuple[str, dict[str, str], bytes]:
    seen: dict[str, Any] = {}

    def start_response(status: str, headers: list[tuple[str, str]]) -> None:
        seen["status"] = status
        seen["headers"] = dict(headers)

    body = b"".join(job_route(env, start_response))
    return seen["status"], seen["headers"], body


@pytest.mark.parametrize(
    "env",
    [
        environ("GET", "/tools/echo"),
        environ("POST", "/other/echo", b"x"),
        environ("POST", "/tools/", b"x"),
        environ("POST", "/tools/a/b", b"x"),
        environ("POST", "/map/tools/echo", b"[1]"),
        environ("POST", "/jobs/tools/echo", b"x"),
        environ("POST", "/tools/\u00e9", b"x"),
        environ("POST", "/tools/echo", b"x" * 101),
        environ("POST", "/tools/echo", b"x", CONTENT_LENGTH=""),
        environ("POST", "/tools/echo", b"x", CONTENT_LENGTH="-1"),
        environ("POST", "/tools/echo", b"x", CONTENT_LENGTH="ten"),
    ],
    ids=[
        "get",
        "unknown-service",
        "no-function",
        "nested",
        "map",
        "jobs",
        "non-ascii",
        "over-limit",
        "no-length",
        "negative-length",
        "bad-length",
    ],
)
def test_anything_but_a_plain_job_request_goes_to_flask(route, env):
    job_route, recorder, _ = route
    status, _, body = run(job_route, env)
    assert (status, body) == ("299 Passed", b"flask")
    assert recorder.passed == [env["PATH_INFO"]]
    assert recorder.calls == []


def test_a_job_request_runs_the_job_with_its_request_id(route):
    job_route, recorder, _ = route
    env = environ("POST", "/tools/echo", b"abc", HTTP_X_REQUEST_ID="req-7")
    status, headers, body = run(job_route, env)
    assert status == "200 OK"
    assert body == b"cba"
    assert headers["Content-Type"] == "application/octet-stream"
    assert headers["Content-Length"] == "3"
    assert headers["x-request-id"] == "req-7"
    assert recorder.calls == [("tools", "echo", b"abc", "req-7")]
    assert recorder.passed == []
    assert REQUEST_ID.get() == "-"  # reset after the request


def test_job_ids_and_request_ids_are_unique(route):
    job_route, _, _ = route
    answers = [run(job_route, environ("POST", "/tools/echo", b"a"))[1] for _ in range(100)]
    job_ids = {h["X-Palm-Job-Id"] for h in answers}
    request_ids = {h["x-request-id"] for h in answers}
    assert len(job_ids) == len(request_ids) == 100
    assert not job_ids & request_ids  # one counter, each value used once
    assert all(len(rid) == 32 and int(rid, 16) >= 0 for rid in request_ids)


@pytest.mark.parametrize(
    ("function", "status", "error"),
    [("fail", "502 Bad Gateway", "remote error"), ("nope", "404 Not Found", "unknown function")],
)
def test_errors_are_json_with_their_status(route, function, status, error):
    job_route, _, _ = route
    got, headers, body = run(job_route, environ("POST", f"/tools/{function}", b"x"))
    assert got == status
    assert headers["Content-Type"] == "application/json"
    assert int(headers["Content-Length"]) == len(body)
    answer = json.loads(body)
    assert answer["error"] == error
    assert "status" not in answer and answer["detail"]


def test_answers_are_counted_in_the_metrics(route):
    job_route, _, metrics = route
    run(job_route, environ("POST", "/tools/echo", b"x"))
    run(job_route, environ("POST", "/tools/echo", b"y"))
    run(job_route, environ("POST", "/tools/fail", b"x"))
    requests = metrics.requests.labels(RULE, "POST", "200")._value.get()
    failed = metrics.requests.labels(RULE, "POST", "502")._value.get()
    assert (requests, failed) == (2, 1)
