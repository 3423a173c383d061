"""Where the dashboard and /metrics are reachable: Envoy's routes and the open paths."""

from __future__ import annotations

from pathlib import Path

import pytest

from palm.errors import ConfigError
from palm.gateway.auth import is_open_path
from palm.gateway.dashboard import STATIC_DIR
from palm.gateway.envoy_config import EdgeConfig, render_routes


def test_envoy_routes_the_dashboard_and_metrics_to_the_gateway_unchanged() -> None:
    config = EdgeConfig({"echo": "/echo"}, (("127.0.0.1", 8000),))
    routes = render_routes(config)["virtual_hosts"][0]["routes"]
    matches = {tuple(sorted(r["match"].items())): r for r in routes}
    for match in (("path", "/dashboard"), ("prefix", "/dashboard/"), ("path", "/metrics")):
        route = matches[(match,)]["route"]
        assert route["cluster"] == "palm_gateway", match
        assert "prefix_rewrite" not in route, match
    names = [r["name"] for r in routes]
    assert len(names) == len(set(names))


def test_no_service_may_take_the_dashboards_name_or_prefix() -> None:
    with pytest.raises(ConfigError):
        EdgeConfig({"dashboard": "/x"}, (("127.0.0.1", 8000),))
    with pytest.raises(ConfigError):
        EdgeConfig({"x": "/dashboard"}, (("127.0.0.1", 8000),))


def test_only_the_page_and_its_files_are_open() -> None:
    for path in ("/healthz", "/dashboard", "/dashboard/", "/dashboard/static/dashboard.js"):
        assert is_open_path(path), path
    for path in (
        "/dashboard/api/snapshot",
        "/dashboard/static/../api/snapshot",
        "/dashboardx",
        "/metrics",
        "/jobs/abc",
    ):
        assert not is_open_path(path), path


def test_the_page_files_are_package_data() -> None:
    import tomllib

    root = Path(__file__).resolve().parents[2]
    project = tomllib.loads((root / "pyproject.toml").read_text())
    patterns = project["tool"]["setuptools"]["package-data"]["palm"]
    package = root / "palm"
    shipped = {p for pattern in patterns for p in package.glob(pattern)}
    files = {p for p in STATIC_DIR.iterdir() if p.is_file()}
    assert {p.name for p in files} >= {"index.html", "dashboard.js", "dashboard.css"}
    assert files <= shipped
