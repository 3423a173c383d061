"""A bounded load through Envoy: 64 keep-alive connections, only 200s and 429s."""

from __future__ import annotations

import pytest

from palm.gateway.envoy_config import EdgeConfig, RateLimit
from tests.fixtures.load import run_load

pytest_plugins = ["tests.fixtures.edge"]

pytestmark = pytest.mark.timeout(90)


def test_64_keep_alive_connections_see_no_errors_but_429s(gateway_factory, envoy_factory):
    gw = gateway_factory({}, workers=2, threads=8)
    budget = RateLimit(max_tokens=500, tokens_per_fill=200, fill_interval_s=0.1)
    edge = envoy_factory(
        EdgeConfig(services={}, gateways=(gw.address,), access_log=None, rate_limit=budget)
    )
    result = run_load("127.0.0.1", edge.port, "GET", "/healthz", None, requests_per_connection=40)
    assert result.errors == {}
    assert set(result.statuses) <= {200, 429}
    assert result.statuses[200] > 0
    assert result.total == 64 * 40 or result.elapsed_s >= 10.0


def test_64_connections_calling_a_palm_server_get_the_right_bytes(
    palm_server_factory, gateway_factory, envoy_factory
):
    address = palm_server_factory("tools")
    gw = gateway_factory(
        {"services": {"tools": {"kind": "standalone", "address": address}}}, workers=2, threads=8
    )
    edge = envoy_factory(
        EdgeConfig(services={"tools": "/t"}, gateways=(gw.address,), access_log=None)
    )
    payload = b"palm" * 64
    result = run_load(
        "127.0.0.1",
        edge.port,
        "POST",
        "/t/echo",
        payload,
        expect_body=payload,
        requests_per_connection=20,
    )
    assert result.errors == {}
    assert set(result.statuses) <= {200, 429}
    assert result.statuses[200] > 0
    assert result.bad_bodies == 0
    assert result.total == 64 * 20 or result.elapsed_s >= 10.0
