"""The live dashboard's page and data: the gateway's Flask app against a real
redis-server holding published counters and central logs, and ``palm dashboard``
run as a real process. (The page in a real browser through Envoy:
tests/e2e/test_dashboard_browser.py.)"""

from __future__ import annotations

import logging
import subprocess
import sys
from collections.abc import Iterator
from typing import Any

import pytest

from palm.gateway.app import create_app
from palm.gateway.dashboard import snapshot
from palm.state.apikeys import ApiKeyStore
from palm.state.counters import CounterPublisher, Counters
from palm.state.logs import RedisLogHandler
from palm.state.store import State
from tests.fixtures.http import request
from tests.fixtures.procs import Processes

pytest_plugins = ["tests.fixtures.edge"]

pytestmark = pytest.mark.timeout(120)

CLUSTER = "dashtest"


@pytest.fixture
def state(redis_url: str) -> Iterator[State]:
    with State(redis_url, CLUSTER) as opened:
        yield opened


def publish_deployment(state: State) -> None:
    """A master with two workers (one busy) and a function that failed once, as
    a running deployment publishes them, and a few central log records."""
    counters = Counters("demo")
    for _ in range(3):
        counters.record("foo", 0.004)
    counters.record("foo", 0.2, ok=False)
    counters.job_started("foo")  # one still in flight
    counters.set_backlog(7)
    counters.worker_seen("demo-w1", 12, host="node-a", pid=4242, busy=2)
    counters.worker_seen("demo-w2", 5, host="node-b", pid=4343)
    counters.worker_seen("demo-w3", 1, host="node-b", pid=4444)
    counters.worker_lost("demo-w3")
    assert CounterPublisher(state, counters, ttl_s=60).publish()
    handler = RedisLogHandler(state, "demo", "demo-w1")
    logger = logging.getLogger("tests.dashboard")
    logger.propagate = False
    logger.setLevel(logging.INFO)
    logger.addHandler(handler)
    try:
        logger.info("all good <b>here</b>")
        logger.error("foo failed: ValueError('bad input')")
    finally:
        logger.removeHandler(handler)
        handler.close()


def test_the_snapshot_holds_servers_workers_functions_errors_and_logs(state: State):
    publish_deployment(state)
    snap = snapshot(state, {"demo": "parallel", "echo": "standalone"})
    assert snap["problem"] == ""
    assert snap["cluster"] == CLUSTER
    assert snap["services"] == [
        {"name": "demo", "kind": "parallel", "live": True},
        {"name": "echo", "kind": "standalone", "live": False},
    ]
    (server,) = snap["servers"]
    assert server["name"] == "demo" and server["kind"] == "master"
    assert server["backlog"] == 7 and server["in_flight"] == 1 and server["pid"] > 0
    (foo,) = server["functions"]
    assert (foo["in"], foo["out"], foo["failed"], foo["in_flight"]) == (5, 3, 1, 1)
    assert 4 <= foo["p50_ms"] <= foo["p99_ms"] and foo["p99_ms"] == pytest.approx(200)
    workers = {w["id"]: w for w in server["workers"]}
    assert workers["demo-w1"] == {
        **workers["demo-w1"],
        "alive": True,
        "busy": 2,
        "jobs_done": 12,
        "host": "node-a",
        "pid": 4242,
    }
    assert workers["demo-w2"]["busy"] == 0 and workers["demo-w2"]["alive"]
    assert not workers["demo-w3"]["alive"]
    totals = snap["totals"]
    assert (totals["workers"], totals["workers_alive"], totals["workers_busy"]) == (3, 2, 1)
    assert [e["message"] for e in snap["errors"]] == ["foo failed: ValueError('bad input')"]
    assert snap["errors"][0]["level"] == "ERROR" and snap["errors"][0]["worker"] == "demo-w1"
    # newest first
    assert [r["message"] for r in snap["logs"]] == [
        "foo failed: ValueError('bad input')",
        "all good <b>here</b>",
    ]


def test_without_redis_the_snapshot_reports_the_problem_instead_of_raising(tmp_path):
    with State(f"unix://{tmp_path}/none.sock", CLUSTER) as nowhere:
        snap = snapshot(nowhere)
    assert "none.sock" in snap["problem"] or snap["problem"]
    assert snap["servers"] == [] and snap["logs"] == []


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def test_the_page_and_its_files_need_no_key_the_data_does(redis_url: str, state: State):
    publish_deployment(state)
    _key, token = ApiKeyStore(state).create("tests")
    app = create_app(
        {
            "redis_url": redis_url,
            "cluster": CLUSTER,
            "services": {"demo": {"kind": "standalone", "address": "tcp://127.0.0.1:9"}},
        }
    )
    client = app.test_client()
    for path in ("/dashboard", "/dashboard/"):
        page = client.get(path)
        assert page.status_code == 200, path
        assert page.mimetype == "text/html"
        assert b'src="/dashboard/static/dashboard.js"' in page.data
        assert "script-src 'self'" in page.headers["Content-Security-Policy"]
    for name, mimetype in (("dashboard.js", "text/javascript"), ("dashboard.css", "text/css")):
        served = client.get(f"/dashboard/static/{name}")
        assert served.status_code == 200 and served.mimetype == mimetype, name
    # nothing outside the dashboard's folder, key or not
    assert client.get("/dashboard/static/../app.py").status_code in (401, 404)
    assert client.get("/dashboard/static/%2e%2e/app.py", headers=bearer(token)).status_code == 404
    # the data needs the key, and is not cached
    assert client.get("/dashboard/api/snapshot").status_code == 401
    reply = client.get("/dashboard/api/snapshot", headers=bearer(token))
    assert reply.status_code == 200
    assert reply.headers["Cache-Control"] == "no-store"
    body: dict[str, Any] = reply.get_json()
    assert [s["name"] for s in body["servers"]] == ["demo"]
    assert body["services"] == [{"name": "demo", "kind": "standalone", "live": True}]
    # the same counters for Prometheus, a worker's jobs held included
    metrics = client.get("/metrics", headers=bearer(token)).get_data(as_text=True)
    assert 'palm_worker_busy{server="demo",worker="demo-w1"} 2.0' in metrics


def test_without_redis_the_gateway_dashboard_api_answers_503():
    app = create_app({"auth": "open"})
    client = app.test_client()
    assert client.get("/dashboard").status_code == 200
    reply = client.get("/dashboard/api/snapshot")
    assert reply.status_code == 503 and reply.get_json()["error"] == "no state"


def test_palm_dashboard_serves_a_deployment_without_the_edge(
    redis_url: str, state: State, procs: Processes
):
    publish_deployment(state)
    proc = procs.start(
        [
            sys.executable,
            "-m",
            "palm",
            "--log-level",
            "WARNING",
            "dashboard",
            "--redis",
            redis_url,
            "--cluster",
            CLUSTER,
            "--port",
            "0",
        ]
    )
    assert proc.stdout is not None
    first = proc.stdout.readline()
    assert first.startswith(f"palm dashboard of '{CLUSTER}': http://127.0.0.1:"), first
    url = first.split()[-1].removesuffix("/dashboard")
    page = request(url, "GET", "/dashboard")
    assert page.status == 200 and b"dashboard.js" in page.body
    snap = request(url, "GET", "/dashboard/api/snapshot").json()
    assert [s["name"] for s in snap["servers"]] == ["demo"]
    assert {w["id"] for w in snap["servers"][0]["workers"]} == {"demo-w1", "demo-w2", "demo-w3"}
    assert request(url, "GET", "/").headers["location"] == "/dashboard"
    proc.terminate()  # SIGTERM: it stops serving and exits 0
    assert proc.wait(30) == 0


def test_palm_dashboard_without_a_reachable_redis_says_so(tmp_path, procs: Processes):
    proc = procs.start(
        [
            sys.executable,
            "-m",
            "palm",
            "dashboard",
            "--redis",
            f"unix://{tmp_path}/none.sock",
            "--port",
            "0",
        ],
        stderr=subprocess.PIPE,
    )
    _out, err = proc.communicate(timeout=60)
    assert proc.returncode == 1
    assert err.startswith("palm dashboard: ") and "none.sock" in err


def test_the_snapshot_reads_only_the_newest_records_of_a_long_log(state: State):
    handler = RedisLogHandler(state, "busy")
    logger = logging.getLogger("tests.dashboard.long")
    logger.propagate = False
    logger.setLevel(logging.INFO)
    logger.addHandler(handler)
    try:
        logger.error("an old error")
        for i in range(400):
            logger.info("line %d", i)
        logger.warning("a recent warning")
    finally:
        logger.removeHandler(handler)
        handler.close()
    snap = snapshot(state, scan=300, logs=40)
    # the old error is past the newest 300 records: not read, however long the log
    assert [e["message"] for e in snap["errors"]] == ["a recent warning"]
    assert len(snap["logs"]) == 40
    assert snap["logs"][0]["message"] == "a recent warning"
    assert snap["logs"][-1]["message"] == "line 361"  # the warning, then lines 399 to 361
