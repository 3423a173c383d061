"""mastr as a service: the plan a deployment tool reads, and ``service serve`` run for real."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import psutil
import pytest

from examples.mastr import generate
from examples.mastr.aggregate import aggregate, compare, gross_aggregates, value_all
from examples.mastr.client import value_portfolio
from examples.mastr.schema import validate_portfolio
from examples.mastr.service import (
    AGGREGATION_WORKER,
    VALUATION_WORKER,
    deployment_from_masters,
    deployment_from_palm,
    palm_yaml,
    plan,
)
from palm.ops.config import load_deployment
from tests.fixtures.procs import Processes, ready

if TYPE_CHECKING:
    from tests.fixtures.redis import RedisProcess

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.timeout(180)


def test_the_plan_gives_each_shard_master_exactly_one_worker() -> None:
    described = plan(shards=3, workers=4)
    assert [m["name"] for m in described["masters"]] == [
        "mastr-value",
        "mastr-agg-0",
        "mastr-agg-1",
        "mastr-agg-2",
    ]
    pools = {p["master"]: p for p in described["workers"]}
    assert pools["mastr-value"]["spec"] == VALUATION_WORKER
    assert pools["mastr-value"]["processes"] == 4
    for i in range(3):
        shard = pools[f"mastr-agg-{i}"]
        assert (shard["spec"], shard["processes"], shard["fixed"]) == (AGGREGATION_WORKER, 1, True)
    assert all(p["env"] == ["PALM_REDIS_URL"] for p in described["workers"])


def test_serve_runs_a_deployment_that_run_uses_and_stops_every_child(
    procs: Processes, redis_proc: RedisProcess, tmp_path: Path
) -> None:
    serve = procs.start(
        [
            sys.executable,
            "-m",
            "examples.mastr.service",
            "serve",
            *("--shards", "2", "--workers", "1", "--redis", redis_proc.url),
        ]
    )
    event = ready(serve, timeout_s=60)
    children = psutil.Process(serve.pid).children(recursive=True)
    try:
        assert len(children) == 3 + 3  # three masters, one valuation and two aggregation workers
        deployment = event["deployment"]
        found = deployment_from_masters(
            {m["name"]: m["db"] for m in (deployment["valuation"], *deployment["shards"])},
            redis_proc.url,
        )
        assert json.loads(found.to_json()) == deployment

        ready_file = tmp_path / "ready.json"
        ready_file.write_text(json.dumps(event))
        done = subprocess.run(
            [
                *(sys.executable, "-m", "examples.mastr", "run", "--positions", "500"),
                *("--deployment", str(ready_file), "--chart", ""),
            ],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert done.returncode == 0, done.stderr
        assert "valued 500 positions" in done.stdout and "TOTAL" in done.stdout
    finally:
        serve.send_signal(signal.SIGTERM)  # it stops its children; SIGKILL would orphan them
        code = serve.wait(30)
        _, alive = psutil.wait_procs(children, timeout=10)
        for proc in alive:
            proc.kill()
    assert code == 0 and alive == []


def test_the_palm_yaml_block_runs_under_palm_masters(
    procs: Processes, redis_proc: RedisProcess, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = tmp_path / "palm.yaml"
    config.write_text(
        f"name: mastrtest\nredis: {redis_proc.url}\nservices:\n{palm_yaml(2, 1, 15590)}"
    )
    parsed = load_deployment(config)
    assert sorted(parsed.services) == ["mastr-agg-0", "mastr-agg-1", "mastr-value"]
    masters, event = procs.palm("masters", "--config", str(config), "--any-port")
    children = psutil.Process(masters.pid).children(recursive=True)
    try:
        services = event["services"]
        monkeypatch.setenv("PALM_REDIS_URL", redis_proc.url)
        for name in services:
            spec = parsed.services[name].worker
            assert spec is not None
            procs.worker(spec, name, services[name]["addresses"])
        deployment = deployment_from_palm(services, redis_proc.url, "mastrtest")
        portfolio = validate_portfolio(generate.generate_document(800, seed=3))
        result = value_portfolio(portfolio, deployment, run="yaml")
        assert result.final is not None and result.final.count == 800
        valuations = value_all(portfolio)
        reference, gross = aggregate(valuations), gross_aggregates(valuations)
        assert compare(result.final.aggregates, reference, gross) == []
    finally:
        masters.send_signal(signal.SIGTERM)  # it stops its masters; SIGKILL would orphan them
        masters.wait(30)
        _, alive = psutil.wait_procs(children, timeout=10)
        for proc in alive:
            proc.kill()
    assert alive == []
