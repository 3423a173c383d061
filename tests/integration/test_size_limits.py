"""Size limits on real processes: a master's ``max_message_bytes`` and the gateway's 413.

A real master with a small limit answers a job over it with PayloadTooLarge
and keeps serving; the gateway in front of it answers 413 with a JSON body,
both for a body over its own ``max_payload_bytes`` and for one the master
refuses, and the keep-alive connection serves the next request.
"""

from __future__ import annotations

import http.client
import json
import sys
from typing import Any

import pytest

from palm.call.parallel import ParallelClient
from palm.call.request import Client
from palm.errors import RemoteError
from tests.fixtures.procs import Processes, ready, wait_for

pytest_plugins = ["tests.fixtures.edge"]

pytestmark = pytest.mark.timeout(120)

MASTER_LIMIT = 1000
GATEWAY_LIMIT = 4096
WORKER = "tests.apps.services:EchoWorker"


def small_master(procs: Processes) -> dict[str, Any]:
    """A real master with a 1000-byte limit and one echo worker, both registered."""
    proc = procs.start([sys.executable, "-m", "tests.apps.small_master", str(MASTER_LIMIT)])
    info = ready(proc)
    procs.worker(WORKER, "w0", info, "--heartbeat-interval-s", "0.2")
    with Client(info["db"], info["name"], timeout_s=5) as probe:
        wait_for(lambda: probe.info()["workers"], 30)
    return info


def client_of(info: dict[str, Any]) -> ParallelClient:
    # the client's own limit is the default (64 MiB): only the master refuses
    return ParallelClient(info["push"], info["pull"], info["db"], info["name"], timeout_s=20)


def test_a_master_answers_a_job_over_its_limit_with_PayloadTooLarge_and_keeps_serving(
    procs: Processes,
) -> None:
    info = small_master(procs)
    with client_of(info) as client:
        with pytest.raises(RemoteError) as err:
            client.eval("echo", b"x" * (2 * MASTER_LIMIT))
        assert err.value.remote_type == "palm.PayloadTooLarge"
        assert f"limit of {MASTER_LIMIT} bytes" in err.value.remote_message
        assert client.eval("echo", b"still serving") == b"still serving"
        assert client.eval("echo", b"z" * (MASTER_LIMIT // 2)) == b"z" * (MASTER_LIMIT // 2)


def post(conn: http.client.HTTPConnection, path: str, body: bytes) -> tuple[int, bytes]:
    conn.request("POST", path, body=body)
    reply = conn.getresponse()
    data = reply.read()
    if reply.status >= 400:
        assert reply.getheader("content-type", "").startswith("application/json")
    return reply.status, data


def test_the_gateway_answers_413_with_json_and_keeps_the_connection(
    procs: Processes, gateway_factory: Any
) -> None:
    info = small_master(procs)
    spec = {
        "kind": "parallel",
        "push_address": info["push"],
        "pull_address": info["pull"],
        "db_address": info["db"],
        "server_name": info["name"],
    }
    gateway = gateway_factory(
        {"services": {"small": spec}, "timeout_s": 20.0, "max_payload_bytes": GATEWAY_LIMIT}
    )
    host, port = gateway.address
    conn = http.client.HTTPConnection(host, port, timeout=30)
    try:
        assert post(conn, "/small/echo", b"hello") == (200, b"hello")
        sock = conn.sock
        cases = [
            ("/small/echo", b"x" * (GATEWAY_LIMIT + 1)),  # over the gateway's limit
            ("/small/echo", b"y" * (2 * MASTER_LIMIT)),  # over the master's
            ("/map/small/echo", json.dumps(["z" * (2 * MASTER_LIMIT)]).encode()),
        ]
        for path, body in cases:
            status, data = post(conn, path, body)
            assert status == 413, (path, data[:200])
            error = json.loads(data)
            assert error["error"] == "payload too large", error
            assert error["detail"]
            assert post(conn, "/small/echo", b"next") == (200, b"next")
        assert conn.sock is sock  # every answer came on the one connection
    finally:
        conn.close()
