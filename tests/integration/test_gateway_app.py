"""The gateway behind Envoy, calling a real palm standalone server: results,
every error status, maps, asynchronous jobs in Redis, metrics, request ids."""

from __future__ import annotations

import base64
import http.client
import json
import os
from typing import Any

import pytest

from palm.gateway.envoy_config import EdgeConfig
from tests.fixtures.http import Reply, request, wait_until

pytest_plugins = ["tests.fixtures.edge"]

pytestmark = pytest.mark.timeout(90)

MAX_PAYLOAD_BYTES = 64 * 1024


class Stack:
    """palm server -> gunicorn gateway -> Envoy, service ``tools`` at ``/t``."""

    def __init__(self, palm_server_factory, gateway_factory, envoy_factory, **gateway) -> None:
        address = palm_server_factory("tools")
        config: dict[str, Any] = {
            "services": {"tools": {"kind": "standalone", "address": address}},
            "timeout_s": 5.0,
            "max_payload_bytes": MAX_PAYLOAD_BYTES,
            **gateway,
        }
        self.gateway = gateway_factory(config)
        self.edge = envoy_factory(
            EdgeConfig(services={"tools": "/t"}, gateways=(self.gateway.address,), access_log=None)
        )

    def post(self, path: str, body: bytes, **headers: str) -> Reply:
        return request(self.edge.url, "POST", path, body=body, headers=headers)

    def get(self, path: str) -> Reply:
        return request(self.edge.url, "GET", path)


@pytest.fixture
def stack(palm_server_factory, gateway_factory, envoy_factory) -> Stack:
    return Stack(palm_server_factory, gateway_factory, envoy_factory)


def error_of(reply: Reply) -> dict[str, Any]:
    assert reply.headers["content-type"].startswith("application/json")
    body: dict[str, Any] = reply.json()
    assert set(body) >= {"error", "detail"}
    return body


def test_a_request_through_envoy_returns_the_result_bytes(stack):
    payload = os.urandom(4096)
    reply = stack.post("/t/echo", payload)
    assert reply.status == 200
    assert reply.body == payload
    assert len(reply.headers["x-palm-job-id"]) == 32


def test_the_function_runs_on_the_payload(stack):
    assert stack.post("/t/upper", b"hello palm").body == b"HELLO PALM"


def test_an_unknown_function_is_404(stack):
    reply = stack.post("/t/nope", b"x")
    assert reply.status == 404
    assert error_of(reply)["error"] == "unknown function"


def test_an_unknown_service_is_404_at_the_gateway(stack):
    reply = stack.post("/map/ghost/echo", b"[]")
    assert reply.status == 404
    assert error_of(reply)["error"] == "unknown service"


def test_a_payload_over_the_limit_is_413(stack):
    reply = stack.post("/t/echo", b"x" * (MAX_PAYLOAD_BYTES + 1))
    assert reply.status == 413
    assert error_of(reply)["error"] == "payload too large"


def test_an_exception_in_user_code_is_502_with_its_type_and_message(stack):
    reply = stack.post("/t/fail", b"oops")
    assert reply.status == 502
    body = error_of(reply)
    assert body["remote_type"].endswith("ValueError")
    assert "cannot take 'oops'" in body["remote_message"]
    # The server keeps serving.
    assert stack.post("/t/echo", b"still here").body == b"still here"


def test_a_call_past_the_timeout_is_504(palm_server_factory, gateway_factory, envoy_factory):
    stack = Stack(palm_server_factory, gateway_factory, envoy_factory, timeout_s=0.3)
    reply = stack.post("/t/sleep", b"2")
    assert reply.status == 504
    assert error_of(reply)["error"] == "timeout"


def test_a_malformed_map_body_is_400(stack):
    for body in (b"[1, 2", b'{"not": "a list"}'):
        reply = stack.post("/map/tools/double", body)
        assert reply.status == 400
        assert error_of(reply)["error"] == "malformed body"


def test_map_returns_results_in_order(stack):
    items = [1, "ab", [3], 4, 5.5]
    reply = stack.post("/map/tools/double", json.dumps(items).encode())
    assert reply.status == 200
    assert reply.json() == [2, "abab", [3, 3], 8, 11.0]


def test_map_results_that_are_not_json_come_back_as_base64(stack):
    reply = stack.post("/map/tools/raw", json.dumps(["a", 1]).encode())
    assert reply.status == 200
    assert [base64.b64decode(x) for x in reply.json()] == [b'\xff\x00"a"', b"\xff\x001"]


def test_a_map_with_a_failing_item_is_502(stack):
    reply = stack.post("/map/tools/fail", b"[1, 2]")
    assert reply.status == 502


def post_chunked(url: str, path: str, parts: list[bytes]) -> Reply:
    """A POST whose body has no Content-Length (chunked transfer encoding)."""
    host, _, port = url.removeprefix("http://").partition(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=10)
    try:
        conn.request("POST", path, body=iter(parts), encode_chunked=True)
        response = conn.getresponse()
        data = response.read()
        return Reply(response.status, {k.lower(): v for k, v in response.getheaders()}, data)
    finally:
        conn.close()


def test_a_chunked_request_gets_the_answers_of_a_sized_one(stack):
    # A body without Content-Length is left to the Flask view; a sized one is
    # answered in front of Flask. Both must give the same answers.
    url = stack.gateway.url
    for path, status in (("/tools/echo", 200), ("/tools/fail", 502), ("/tools/nope", 404)):
        sized = request(url, "POST", path, body=b"oops")
        chunked = post_chunked(url, path, [b"oo", b"ps"])
        assert sized.status == chunked.status == status, (path, sized, chunked)
        assert sized.headers["content-type"] == chunked.headers["content-type"]
        if status == 200:
            assert sized.body == chunked.body == b"oops"
            assert sized.headers["x-palm-job-id"] != chunked.headers["x-palm-job-id"]
        else:
            assert sized.json() == chunked.json()
        assert sized.headers["x-request-id"] and chunked.headers["x-request-id"]


def test_the_request_id_comes_back(stack):
    reply = stack.post("/t/echo", b"x", **{"x-request-id": "req-42"})
    assert reply.headers["x-request-id"] == "req-42"


def test_metrics_count_the_gateway_requests(stack):
    for _ in range(3):
        stack.post("/t/echo", b"x")
    text = request(stack.gateway.url, "GET", "/metrics").body.decode()
    lines = [line for line in text.splitlines() if line.startswith("palm_gateway_requests_total")]
    counted = sum(
        float(line.rsplit(" ", 1)[1])
        for line in lines
        if 'route="/<service>/<function>"' in line and 'status="200"' in line
    )
    assert counted == 3
    assert "palm_gateway_request_duration_seconds_bucket" in text


def wait_for_job(stack: Stack, job_id: str) -> dict[str, Any]:
    seen: dict[str, Any] = {}

    def finished() -> bool:
        seen.update(stack.get(f"/jobs/{job_id}").json())
        return seen["status"] != "pending"

    wait_until(finished, 20.0, f"job {job_id}")
    return seen


def test_an_async_job_is_kept_in_redis_until_read(
    redis_url, palm_server_factory, gateway_factory, envoy_factory
):
    stack = Stack(palm_server_factory, gateway_factory, envoy_factory, redis_url=redis_url)
    accepted = stack.post("/jobs/tools/upper", b"later")
    assert accepted.status == 202
    job_id = accepted.json()["job_id"]
    status = wait_for_job(stack, job_id)
    assert status["status"] == "done"
    assert base64.b64decode(status["result_base64"]) == b"LATER"
    assert stack.get(f"/jobs/{job_id}/result").body == b"LATER"
    import redis

    ttl = redis.Redis.from_url(redis_url).ttl(f"palm:gateway:job:{job_id}")
    assert 0 < ttl <= 3600


def test_a_failed_async_job_reports_its_error(
    redis_url, palm_server_factory, gateway_factory, envoy_factory
):
    stack = Stack(palm_server_factory, gateway_factory, envoy_factory, redis_url=redis_url)
    job_id = stack.post("/jobs/tools/fail", b"bad").json()["job_id"]
    status = wait_for_job(stack, job_id)
    assert status["status"] == "failed"
    assert status["http_status"] == 502
    assert stack.get(f"/jobs/{job_id}/result").status == 502


def test_an_unknown_job_is_404(redis_url, palm_server_factory, gateway_factory, envoy_factory):
    stack = Stack(palm_server_factory, gateway_factory, envoy_factory, redis_url=redis_url)
    assert stack.get("/jobs/0123456789abcdef").status == 404


def test_jobs_without_redis_are_503(stack):
    reply = stack.post("/jobs/tools/echo", b"x")
    assert reply.status == 503
    assert error_of(reply)["error"] == "no job store"


def test_a_parallel_service_runs_jobs_and_maps_on_its_workers(gateway_factory, envoy_factory):
    from palm.ops.cluster import LocalCluster

    with LocalCluster(
        workers=2, name="pool", worker_class="tests.fixtures.palm_worker:EdgeTestWorker"
    ) as cluster:
        cluster.wait_for_workers()
        spec = {
            "kind": "parallel",
            "push_address": cluster.addresses["push"],
            "pull_address": cluster.addresses["pull"],
            "db_address": cluster.addresses["db"],
            "server_name": "pool",
        }
        gw = gateway_factory({"services": {"pool": spec}, "timeout_s": 10.0})
        edge = envoy_factory(
            EdgeConfig(services={"pool": "/p"}, gateways=(gw.address,), access_log=None)
        )
        reply = request(edge.url, "POST", "/p/upper", body=b"fan out")
        assert (reply.status, reply.body) == (200, b"FAN OUT")
        items = list(range(50))
        reply = request(edge.url, "POST", "/map/pool/double", body=json.dumps(items).encode())
        assert reply.json() == [2 * i for i in items]
        assert request(edge.url, "POST", "/p/fail", body=b"k").status == 502
        assert request(edge.url, "POST", "/p/nothing", body=b"").status == 404


def test_metrics_include_the_palm_counters(palm_server_factory, gateway_factory, envoy_factory):
    # the palm server publishes its counters to the run's Redis (PALM_REDIS_URL)
    stack = Stack(
        palm_server_factory, gateway_factory, envoy_factory, redis_url=os.environ["PALM_REDIS_URL"]
    )
    for _ in range(3):
        assert stack.post("/t/echo", b"counted").status == 200
    line = 'palm_messages_out_total{function="echo",server="tools"} 3.0'

    def metrics() -> str:
        return request(stack.gateway.url, "GET", "/metrics").body.decode()

    wait_until(lambda: line in metrics(), 10.0, "palm counters on /metrics")
    assert 'palm_latency_seconds{function="echo",quantile="0.99",server="tools"}' in metrics()
