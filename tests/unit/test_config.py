"""Deployment files (palm.yaml): checks, ports, the guide palm up prints."""

from __future__ import annotations

from pathlib import Path

import pytest

from palm import puma
from palm.errors import ConfigError
from palm.ops.config import load_deployment, parse_deployment

ROOT = Path(__file__).resolve().parents[2]


def minimal(**service: object) -> dict[str, object]:
    return {"services": {"svc": {"kind": "standalone", "server": "a.b:C", **service}}}


def test_the_shipped_palm_yaml_serves_a_standalone_a_parallel_and_a_function_service():
    config = load_deployment(ROOT / "palm.yaml")
    kinds = {service.kind for service in config.services.values()}
    assert kinds == {"standalone", "parallel", "function"}
    assert config.redis is None
    assert config.services["maths"].worker_spec == "palm.serve.worker:FunctionWorker"
    assert config.routes()["echo"] == "/echo"


def test_fixed_ports_give_five_consecutive_endpoints_and_any_port_lets_the_os_choose():
    config = parse_deployment(
        {"services": {"p": {"kind": "parallel", "worker": "a.b:W", "port": 6000}}}
    )
    service = config.services["p"]
    assert service.bind_addresses("0.0.0.0") == {
        "pull": "tcp://0.0.0.0:6000",
        "push": "tcp://0.0.0.0:6001",
        "worker_pull": "tcp://0.0.0.0:6002",
        "worker_push": "tcp://0.0.0.0:6003",
        "db": "tcp://0.0.0.0:6004",
    }
    assert set(service.bind_addresses("127.0.0.1", any_port=True).values()) == {"tcp://127.0.0.1:*"}


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ({"services": {}}, "at least one service"),
        ({"services": {"s": {"kind": "cron"}}}, r"services\.s\.kind: Input should be 'standalone'"),
        ({"services": {"s": {"kind": "parallel"}}}, r"services\.s: .*needs 'worker'"),
        ({"services": {"jobs": {"server": "a.b:C"}}}, "bad service name"),
        (minimal(route="/map"), r"services\.svc\.route: .*reserved"),
        (minimal(server="not a spec"), r"services\.svc\.server: .*package.module:Name"),
        (minimal(colour="blue"), r"services\.svc\.colour: unknown key"),
        (minimal(workers=-1), r"services\.svc\.workers: .*greater than or equal to 0"),
        (minimal(workers=True), r"services\.svc\.workers: .*integer"),
        ({**minimal(), "edge": {"load_balancer": "fastest"}}, r"edge\.load_balancer"),
        ({**minimal(), "edge": {"rate_limit": {"burst": 3}}}, r"edge\.rate_limit\.burst"),
        ({**minimal(), "edge": {"route_timeout_s": "soon"}}, r"edge\.route_timeout_s"),
        ({**minimal(), "extra": 1}, "extra: unknown key"),
        ({**minimal(), "redis": "localhost:6379"}, r"redis: .*should match"),
        (
            {
                "services": {
                    "a": {"server": "a.b:C", "port": 6002},
                    "b": {"kind": "parallel", "worker": "a.b:W", "port": 6000},
                }
            },
            "port 6002",
        ),
    ],
)
def test_bad_deployment_files_are_refused_with_a_clear_message(raw, message):
    with pytest.raises(ConfigError, match=message):
        parse_deployment(raw)


def test_every_problem_of_a_file_is_reported_at_once_with_its_key_path():
    raw = {
        "nmae": "typo",
        "edge": {"port": -1, "auth": "none"},
        "services": {
            "a": {"kind": "parallel", "workers": "two"},
            "b": {"kind": "function", "functions": {"f": "nocolon"}},
            "c": {"server": "a.b:C", "port": 7000},
            "d": {"server": "a.b:D", "port": 7000},
        },
    }
    with pytest.raises(ConfigError) as caught:
        parse_deployment(raw)
    text = str(caught.value)
    lines = text.splitlines()
    assert lines[0] == f"{len(lines) - 1} problems:"
    for path in (
        "nmae: unknown key",
        "edge.port:",
        "edge.auth:",
        "services.a.workers:",
        "services.a: a parallel service needs 'worker'",
        "services.b.functions.f:",
        "services.d.port: port 7000 is 'c'",
    ):
        assert any(line.startswith(f"  - {path}") for line in lines), (path, text)


def _write(tmp_path: Path, services: str) -> Path:
    (tmp_path / "mine.py").write_text(
        "from palm.serve.worker import Worker\n"
        "class Good(Worker):\n    def f(self, m):\n        return m\n"
        "class NotAWorker:\n    pass\n"
        "def double(x):\n    return 2 * x\n"
    )
    path = tmp_path / "palm.yaml"
    path.write_text("services:\n" + services)
    return path


def test_imports_are_tried_from_the_files_folder_and_every_failure_named(tmp_path):
    path = _write(
        tmp_path,
        "  ok: {kind: parallel, worker: 'mine:Good'}\n"
        "  fn: {kind: function, functions: {double: 'mine:double', nope: 'mine:tripple'}}\n"
        "  typo: {kind: parallel, worker: 'mnie:Good'}\n"
        "  wrong: {kind: parallel, worker: 'mine:NotAWorker'}\n"
        "  srv: {kind: standalone, server: 'mine:Good'}\n",
    )
    assert load_deployment(path).services["typo"].worker == "mnie:Good"  # shape only
    with pytest.raises(ConfigError) as caught:
        load_deployment(path, imports=True)
    text = str(caught.value)
    assert text.startswith("4 problems:"), text
    assert "services.fn.functions.nope: 'mine' has no 'tripple'" in text
    assert "services.typo.worker: cannot import 'mnie'" in text
    assert "services.wrong.worker: 'mine:NotAWorker' is not a subclass of Worker" in text
    assert "services.srv.server: 'mine:Good' is not a subclass of Server" in text
    assert str(tmp_path) not in __import__("sys").path


def test_the_shipped_file_imports_everything_it_names():
    config = load_deployment(ROOT / "palm.yaml", imports=True)
    assert "mastr-value" in config.services


def test_the_guide_names_a_function_each_service_really_has():
    from palm.gateway.guide import examples, guide

    config = load_deployment(ROOT / "palm.yaml")
    paths = [example.path for example in examples(config)]
    assert "/echo/foo" in paths and "/demo/foo" in paths
    assert "/maths/factorial" in paths and "/map/maths/factorial" in paths
    assert "/jobs/echo/foo" in paths
    text = guide(config, "http://127.0.0.1:8080")
    assert "curl -s -X POST --data-binary hello http://127.0.0.1:8080/echo/foo" in text


def test_puma_start_says_so_when_no_http_edge_is_installed(monkeypatch):
    monkeypatch.setattr(puma, "entry_points", lambda group: [])
    monkeypatch.setattr(puma._registry, "services", {"sentiment": len})
    with pytest.raises(ConfigError, match="no HTTP edge is installed"):
        puma.puma_start(block=False)


def test_the_http_edge_is_found_through_its_entry_point():
    from palm.gateway.deploy import Puma

    assert puma.edge_implementation("puma") is Puma


def test_the_guide_states_the_rate_limit_and_the_shipped_one_leaves_room_for_a_load_test():
    from palm.gateway.guide import guide

    config = load_deployment(ROOT / "palm.yaml")
    limit = config.edge.rate_limit
    per_s = limit["tokens_per_fill"] / limit["fill_interval_s"]
    # the HTTP benchmark measures a few thousand requests/s through the whole stack
    assert per_s >= 10_000 and limit["max_tokens"] >= 10_000
    assert f"Rate limit: {per_s:,.0f} requests/s" in guide(config, "http://127.0.0.1:8080")
