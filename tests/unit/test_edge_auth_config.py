"""edge.auth and the Envoy limits in palm.yaml, the guide palm up prints, the
rendered Envoy configuration, and the API key parsing the gateway relies on."""

from __future__ import annotations

from pathlib import Path

import pytest

from palm.errors import ConfigError
from palm.gateway.envoy_config import EdgeConfig, Timeouts, XdsPaths, render
from palm.gateway.guide import guide
from palm.ops.config import load_deployment, parse_deployment
from palm.state.apikeys import parse_rate

ROOT = Path(__file__).resolve().parents[2]


def deployment(**edge: object) -> dict[str, object]:
    return {
        "edge": edge,
        "services": {"echo": {"kind": "standalone", "server": "palm.demo:DemoServer"}},
    }


def test_api_keys_are_the_default_and_open_must_be_asked_for():
    assert parse_deployment(deployment()).edge.auth == "api_keys"
    assert parse_deployment(deployment(auth="open")).edge.auth == "open"
    assert load_deployment(ROOT / "palm.yaml").edge.auth == "api_keys"
    with pytest.raises(ConfigError, match=r"edge\.auth"):
        parse_deployment(deployment(auth="none"))


def test_the_envoy_limits_are_checked():
    edge = parse_deployment(deployment(route_timeout_s=20)).edge
    assert (edge.request_headers_timeout_s, edge.stream_idle_timeout_s) == (10.0, 50.0)
    assert edge.max_connections == 10000
    with pytest.raises(ConfigError, match="must exceed"):
        parse_deployment(deployment(route_timeout_s=60, stream_idle_timeout_s=30))
    with pytest.raises(ConfigError, match="request_headers_timeout_s"):
        parse_deployment(deployment(request_headers_timeout_s=0))
    with pytest.raises(ConfigError, match="max_connections"):
        parse_deployment(deployment(max_connections=0))


def test_the_guide_carries_the_key_or_warns_that_the_edge_is_open():
    config = parse_deployment(deployment())
    text = guide(config, "http://127.0.0.1:8080", "palm_abc_secret")
    commands = [line for line in text.splitlines() if line.strip().startswith("curl ")]
    assert commands and all("'Authorization: Bearer palm_abc_secret'" in c for c in commands)
    assert "open" not in text
    opened = guide(parse_deployment(deployment(auth="open")), "http://127.0.0.1:8080")
    assert "edge.auth is open" in opened and "Bearer" not in opened


def test_envoy_gets_the_headers_timeout_and_the_connection_limit(tmp_path):
    config = EdgeConfig(
        services={},
        gateways=(("127.0.0.1", 1),),
        timeouts=Timeouts(request_headers_s=3.0, stream_idle_s=90.0),
        max_connections=7,
    )
    paths = XdsPaths(tmp_path)
    files = render(config, paths)
    listener = files[paths.lds]["resources"][0]
    hcm = listener["filter_chains"][0]["filters"][0]["typed_config"]
    assert (hcm["request_headers_timeout"], hcm["stream_idle_timeout"]) == ("3s", "90s")
    monitor = files[paths.bootstrap]["overload_manager"]["resource_monitors"][0]
    assert monitor["typed_config"]["max_active_downstream_connections"] == 7
    with pytest.raises(ConfigError):
        EdgeConfig(services={}, gateways=(("127.0.0.1", 1),), max_connections=0)


@pytest.mark.parametrize(("text", "rate"), [("10/s", 10.0), ("2.5", 2.5), (None, 0.0)])
def test_rates_read_as_requests_per_second(text, rate):
    assert parse_rate(text) == rate


def test_a_bad_rate_is_refused():
    for bad in ("ten", "-1/s", "nan"):
        with pytest.raises(ConfigError):
            parse_rate(bad)
