"""API keys at the HTTP edge: the Flask app against a real redis-server, then the
gateway's event loop route under gunicorn behind Envoy, with a real master and
workers; and Envoy closing a connection whose headers never complete."""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator
from typing import Any

import pytest
import redis

from palm.gateway.app import create_app
from palm.gateway.envoy_config import EdgeConfig, Timeouts
from palm.state.apikeys import ApiKeyStore
from palm.state.store import State
from tests.fixtures.edge import parallel_service
from tests.fixtures.http import request, wait_until

pytest_plugins = ["tests.fixtures.edge"]

pytestmark = pytest.mark.timeout(120)

CLUSTER = "authtest"


@pytest.fixture
def store(redis_url: str) -> Iterator[ApiKeyStore]:
    with State(redis_url, CLUSTER) as state:
        yield ApiKeyStore(state)


def flask_client(redis_url: str, **config: Any) -> Any:
    app = create_app({"redis_url": redis_url, "cluster": CLUSTER, **config})
    return app.test_client()


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def test_a_request_without_a_key_gets_401_with_a_bearer_challenge(redis_url, store):
    client = flask_client(redis_url)
    for path, method in (("/metrics", "GET"), ("/jobs/abc", "GET"), ("/echo/foo", "POST")):
        reply = client.open(path, method=method, data=b"x")
        assert reply.status_code == 401, path
        assert reply.headers["WWW-Authenticate"].startswith("Bearer")
        assert reply.get_json()["error"] == "unauthorized"
        assert reply.get_json()["detail"]
    wrong = client.get("/metrics", headers={"Authorization": "Basic dXNlcjpwYXNz"})
    assert wrong.status_code == 401


def test_a_valid_key_passes_and_healthz_needs_none(redis_url, store):
    _key, token = store.create("tests")
    client = flask_client(redis_url)
    assert client.get("/metrics", headers=bearer(token)).status_code == 200
    # past the check: the gateway's own answer for an unknown service
    reply = client.post("/nothing/foo", data=b"x", headers=bearer(token))
    assert reply.status_code == 404 and reply.get_json()["error"] == "unknown service"
    assert client.get("/healthz").status_code == 200


def test_an_unknown_or_forged_key_gets_401(redis_url, store):
    key, token = store.create("tests")
    client = flask_client(redis_url)
    forged = f"palm_{key.key_id}_{'A' * 43}"  # a real id with the wrong secret
    for bad in (forged, "palm_000000000000_x", "not-a-palm-key", token + "x"):
        assert client.get("/metrics", headers=bearer(bad)).status_code == 401, bad


def test_a_revoked_key_is_refused_within_the_cache_bound(redis_url, store):
    key, token = store.create("tests")
    client = flask_client(redis_url, auth_cache_s=0.5)
    assert client.get("/metrics", headers=bearer(token)).status_code == 200
    assert store.revoke(key.key_id)
    revoked_at = time.monotonic()
    wait_until(
        lambda: client.get("/metrics", headers=bearer(token)).status_code == 401,
        10.0,
        "revoked key refused",
    )
    # the documented bound (auth_cache_s), with room for a loaded machine
    assert time.monotonic() - revoked_at < 0.5 + 5.0
    assert client.get("/metrics", headers=bearer(token)).status_code == 401


def test_over_its_rate_a_key_gets_429_and_other_keys_do_not(redis_url, store):
    _slow, slow_token = store.create("slow", rate=3)
    _free, free_token = store.create("free")
    client = flask_client(redis_url)
    # a fixed one-second window: within 20 requests of one second at most 3 pass
    # (the window may turn over once, hence at most 6)
    statuses = [client.get("/metrics", headers=bearer(slow_token)).status_code for _ in range(20)]
    assert statuses.count(429) >= 14 and set(statuses) == {200, 429}, statuses
    refused = client.get("/metrics", headers=bearer(slow_token))
    if refused.status_code == 429:
        assert refused.get_json()["error"] == "rate limited"
        assert refused.headers["Retry-After"] == "1"
    assert all(
        client.get("/metrics", headers=bearer(free_token)).status_code == 200 for _ in range(20)
    )


def test_without_redis_the_gateway_refuses_with_503(tmp_path, store, redis_url):
    _key, token = store.create("tests")
    gone = f"unix://{tmp_path}/no-redis.sock"
    client = flask_client(gone)
    reply = client.get("/metrics", headers=bearer(token))
    assert reply.status_code == 503
    assert reply.get_json()["error"] == "state unavailable"
    assert client.get("/healthz").status_code == 200


def test_open_mode_serves_without_a_key():
    client = create_app({"auth": "open"}).test_client()
    assert client.get("/metrics").status_code == 200
    assert client.post("/nothing/foo", data=b"x").status_code == 404


def test_api_keys_mode_without_redis_is_refused_at_start():
    from palm.errors import ConfigError

    with pytest.raises(ConfigError, match="redis_url"):
        create_app({"auth": "api_keys"})


def test_keys_are_stored_only_as_hashes_under_the_deployment_prefix(redis_url, store):
    key, token = store.create("named", rate=5)
    raw = redis.Redis.from_url(redis_url)
    keys = [k.decode() for k in raw.keys("*")]
    assert keys and all(k.startswith(f"palm:{CLUSTER}:apikeys:") for k in keys)
    for k in keys:
        values = raw.hgetall(k) if raw.type(k) == b"hash" else {}
        assert token.encode() not in b"".join(values.values())
    (listed,) = store.list()
    assert (listed.key_id, listed.name, listed.rate) == (key.key_id, "named", 5.0)
    assert store.lookup(token) == listed


# --- through gunicorn (palm's event loop worker) and Envoy -------------------


@pytest.fixture(scope="module")
def cluster() -> Iterator[dict[str, Any]]:
    with parallel_service(1) as service:
        yield service


def test_through_envoy_the_event_loop_route_checks_keys(
    redis_url, store, cluster, gateway_factory, envoy_factory
):
    key, token = store.create("edge")
    gw = gateway_factory(
        {
            "services": {"pool": cluster},
            "redis_url": redis_url,
            "cluster": CLUSTER,
            "auth": "api_keys",
            "auth_cache_s": 0.5,
            "timeout_s": 10.0,
        },
        workers=1,
        threads=4,
    )
    edge = envoy_factory(
        EdgeConfig(services={"pool": "/p"}, gateways=(gw.address,), access_log=None)
    )
    # the job route answered on the event loop (a parallel service, Content-Length)
    missing = request(edge.url, "POST", "/p/upper", body=b"hi")
    assert missing.status == 401
    assert missing.headers["www-authenticate"].startswith("Bearer")
    assert missing.json()["error"] == "unauthorized"
    ok = request(edge.url, "POST", "/p/upper", body=b"hi", headers=bearer(token))
    assert ok.status == 200 and ok.body == b"HI", ok
    # a Flask route of the same gateway
    assert request(edge.url, "POST", "/map/pool/upper", body=b"[1]").status == 401
    assert request(edge.url, "GET", "/healthz").status == 200  # Envoy's health check too
    store.revoke(key.key_id)
    wait_until(
        lambda: (
            request(edge.url, "POST", "/p/upper", body=b"hi", headers=bearer(token)).status == 401
        ),
        10.0,
        "revoked key refused through Envoy",
    )


def test_envoy_closes_a_connection_whose_headers_never_complete(gateway_factory, envoy_factory):
    gw = gateway_factory({}, workers=1, threads=2)
    edge = envoy_factory(
        EdgeConfig(
            services={},
            gateways=(gw.address,),
            access_log=None,
            timeouts=Timeouts(request_headers_s=1.0),
        )
    )
    assert request(edge.url, "GET", "/healthz").status == 200
    host, _, port = edge.url.removeprefix("http://").partition(":")
    started = time.monotonic()
    with socket.create_connection((host, int(port)), timeout=30.0) as sock:
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")  # never the blank line
        sock.settimeout(30.0)
        data = b""
        while True:  # read until Envoy closes (EOF) or resets
            try:
                chunk = sock.recv(4096)
            except ConnectionResetError:
                break
            if not chunk:
                break
            data += chunk
    elapsed = time.monotonic() - started
    # closed well before the 30 s read deadline (and Envoy's default stream idle 300 s)
    assert elapsed < 20.0, elapsed
    assert b"200 OK" not in data


def test_envoy_refuses_connections_past_its_limit(gateway_factory, envoy_factory):
    gw = gateway_factory({}, workers=1, threads=2)
    edge = envoy_factory(
        EdgeConfig(services={}, gateways=(gw.address,), access_log=None, max_connections=2)
    )
    host, _, port = edge.url.removeprefix("http://").partition(":")
    held = [socket.create_connection((host, int(port)), timeout=10.0) for _ in range(2)]
    try:
        wait_until(
            lambda: edge.stats().get("http.palm_edge.downstream_cx_active", 0) >= 2,
            10.0,
            "Envoy holds both connections",
        )
        extra = socket.create_connection((host, int(port)), timeout=10.0)
        with extra:
            extra.settimeout(10.0)
            try:  # Envoy closes (or resets) it at once: no answer either way
                extra.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
                answer = extra.recv(4096)
            except (ConnectionResetError, BrokenPipeError):
                answer = b""
        assert answer == b""  # closed without an answer
    finally:
        for sock in held:
            sock.close()

    def healthy() -> bool:
        try:  # Envoy may still count the closed connections for a moment
            return request(edge.url, "GET", "/healthz").status == 200
        except OSError:
            return False

    wait_until(healthy, 10.0, "room again")
