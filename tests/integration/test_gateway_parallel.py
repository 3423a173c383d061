"""Jobs of a parallel service through Envoy and the gateway's event loop: real master,
worker processes, gunicorn and Envoy. The same answers under a WSGI worker class."""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator
from typing import Any

import pytest

from palm.gateway.envoy_config import EdgeConfig
from tests.fixtures.edge import parallel_service
from tests.fixtures.http import Reply, request

pytest_plugins = ["tests.fixtures.edge"]

pytestmark = pytest.mark.timeout(120)

MAX_PAYLOAD_BYTES = 64 * 1024
EDGE_WORKER = "palm.gateway.worker.EdgeWorker"


@pytest.fixture(scope="module")
def cluster() -> Iterator[dict[str, Any]]:
    with parallel_service(2) as service:
        yield service


class Edge:
    def __init__(self, gateway_factory, envoy_factory, spec, worker_class: str) -> None:
        config = {
            "services": {"pool": spec},
            "timeout_s": 1.0,
            "max_payload_bytes": MAX_PAYLOAD_BYTES,
        }
        self.gateway = gateway_factory(config, worker_class=worker_class, threads=8)
        self.edge = envoy_factory(
            EdgeConfig(services={"pool": "/p"}, gateways=(self.gateway.address,), access_log=None)
        )

    def post(self, path: str, body: bytes, **headers: str) -> Reply:
        return request(self.edge.url, "POST", path, body=body, headers=headers)


@pytest.fixture(params=[EDGE_WORKER, "gthread"])
def edge(request, cluster, gateway_factory, envoy_factory) -> Edge:
    return Edge(gateway_factory, envoy_factory, cluster, request.param)


def test_every_answer_of_the_job_route(edge: Edge) -> None:
    reply = edge.post("/p/upper", b"fan out")
    assert (reply.status, reply.body) == (200, b"FAN OUT")
    assert reply.headers["content-type"] == "application/octet-stream"
    assert len(reply.headers["x-palm-job-id"]) >= 16

    unknown = edge.post("/p/nothing", b"x")
    assert unknown.status == 404
    assert unknown.json()["error"] == "unknown function"

    failed = edge.post("/p/fail", b"the key")
    assert failed.status == 502
    body = failed.json()
    assert body["remote_type"] == "KeyError"
    assert "the key" in body["remote_message"]

    late = edge.post("/p/nap", b"1.3")
    assert late.status == 504
    assert late.json()["error"] == "timeout"

    too_big = edge.post("/p/upper", b"x" * (MAX_PAYLOAD_BYTES + 1))
    assert too_big.status == 413

    # the gateway kept serving, and the late answer went to nobody
    assert edge.post("/p/upper", b"after").body == b"AFTER"


def test_the_request_id_reaches_the_worker_and_comes_back(edge: Edge) -> None:
    reply = edge.post("/p/request_id", b"body", **{"x-request-id": "req-42"})
    assert (reply.status, reply.body) == (200, b"req-42|body")
    assert reply.headers["x-request-id"] == "req-42"
    # without one, Envoy makes one up and it still reaches the worker
    reply = edge.post("/p/request_id", b"body")
    made_up = reply.headers["x-request-id"]
    assert made_up and reply.body == made_up.encode() + b"|body"


def test_concurrent_requests_each_get_their_own_answer(edge: Edge) -> None:
    wrong: list[tuple[bytes, int, bytes]] = []
    job_ids: set[str] = set()
    lock = threading.Lock()

    def client(t: int) -> None:
        for i in range(25):
            payload = b"client %d request %d" % (t, i)
            reply = edge.post("/p/upper", payload, **{"x-request-id": f"r-{t}-{i}"})
            with lock:
                job_ids.add(reply.headers.get("x-palm-job-id", ""))
                if (reply.status, reply.body) != (200, payload.upper()):
                    wrong.append((payload, reply.status, reply.body))
                elif reply.headers["x-request-id"] != f"r-{t}-{i}":
                    wrong.append((payload, reply.status, b"request id"))

    threads = [threading.Thread(target=client, args=(t,)) for t in range(32)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert wrong == []
    assert len(job_ids) == 32 * 25


def test_a_client_that_hangs_up_mid_job_leaves_the_gateway_serving(
    cluster, gateway_factory, envoy_factory
) -> None:
    edge = Edge(gateway_factory, envoy_factory, cluster, EDGE_WORKER)
    host, port = edge.gateway.address
    for _ in range(3):  # straight to the gateway: it sees the hang-up itself
        with socket.create_connection((host, port), timeout=5) as sock:
            sock.sendall(b"POST /pool/nap HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\n0.5")
    reply = edge.post("/p/upper", b"next")
    assert (reply.status, reply.body) == (200, b"NEXT")
    assert request(edge.gateway.url, "GET", "/healthz").status == 200
