"""docker-compose.yml: valid for the real docker-compose, and in step with palm.yaml."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from palm.ops.config import ENDPOINTS, load_deployment

pytestmark = pytest.mark.timeout(60)

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.skipif(shutil.which("docker-compose") is None, reason="docker-compose not installed")
def test_docker_compose_accepts_the_compose_file():
    env = {**os.environ, "PALM_SECRET": "a-secret-for-the-test"}
    done = subprocess.run(
        ["docker-compose", "-f", "docker-compose.yml", "config", "-q"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=50,
        env=env,
    )
    assert done.returncode == 0, done.stderr


@pytest.mark.skipif(shutil.which("docker-compose") is None, reason="docker-compose not installed")
def test_docker_compose_refuses_to_run_without_a_cluster_secret():
    env = {k: v for k, v in os.environ.items() if k != "PALM_SECRET"}
    done = subprocess.run(
        ["docker-compose", "-f", "docker-compose.yml", "config", "-q"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=50,
        env=env,
    )
    assert done.returncode != 0
    assert "set PALM_SECRET to a long random string" in done.stderr, done.stderr


def test_every_parallel_service_has_a_worker_pool_connected_to_its_db_port():
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())["services"]
    config = load_deployment(ROOT / "palm.yaml")
    connected = {}
    for spec in compose.values():
        command = spec.get("command") or []
        if command[:2] == ["palm", "worker"]:
            connected[command[command.index("--name") + 1]] = (
                command[2],
                command[command.index("--connect") + 1],
            )
    for name, service in config.services.items():
        if service.kind == "standalone":
            continue
        db_port = service.port + ENDPOINTS.index("db")
        assert connected[name] == (service.worker_spec, f"tcp://masters:{db_port}"), name
    assert set(compose) >= {"redis", "masters", "gateway", "envoy"}
