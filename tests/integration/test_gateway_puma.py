"""The PUMA API: configuration checks, and a whole deployment started by
``puma_start`` in its own process, called through Envoy, stopped by SIGTERM."""

from __future__ import annotations

import asyncio
import json
import math
import os
import select
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import psutil
import pytest

from palm.errors import ConfigError
from palm.puma import puma_config, puma_map, puma_service, puma_stop
from tests.fixtures.http import request

pytest_plugins = ["tests.fixtures.edge"]

pytestmark = pytest.mark.timeout(120)

ROOT = Path(__file__).resolve().parents[2]


def test_puma_config_takes_json_and_checks_it():
    conf = puma_config(
        json.dumps({"puma_services": {"agent": "/agent"}, "load_balancer": "maglev"})
    )
    assert conf["puma_services"] == {"agent": "/agent"}
    with pytest.raises(ConfigError, match="load_balancer"):
        puma_config({"load_balancer": "fastest"})
    with pytest.raises(ConfigError, match="unknown puma_config keys"):
        puma_config({"dynamodb": {}})
    with pytest.raises(ConfigError, match="http_connection_manager"):
        puma_config({"http_connection_manager": {"idle_timeout_s": "soon"}})


def test_puma_service_refuses_source_code_strings():
    with pytest.raises(ConfigError, match="never executes"):
        puma_service({"agent": "def agent(x): return x"})
    with pytest.raises(ConfigError, match="never executes"):
        puma_service(json.dumps({"agent": "def agent(x): return x"}))
    with pytest.raises(ConfigError, match="not callable"):
        puma_service({"agent": 42})


APP = """
import os
from palm.puma import puma_config, puma_service, puma_start

def shout(body):
    return body.decode().upper() + "!"

def fac(n):
    total = 1
    for i in range(2, n + 1):
        total *= i
    return total

puma_config({
    "puma_services": {"shout": "/shout", "maths": "/maths"},
    "load_balancer": "least_request",
    "rate_limit": {"max_tokens": 1000, "tokens_per_fill": 1000, "fill_interval_s": 1},
    "logging": {"access_log": None},
    "workers": 2,
    "redis": os.environ.get("EDGE_TEST_REDIS_URL"),
})
puma_service({"shout": shout, "maths": {"fac": fac}})
puma_start()
"""


def test_puma_start_serves_functions_through_envoy_and_stops_everything(tmp_path, redis_url):
    script = tmp_path / "app.py"
    script.write_text(textwrap.dedent(APP))
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH")) if p)
    env["EDGE_TEST_REDIS_URL"] = redis_url
    proc = subprocess.Popen(
        [sys.executable, str(script)], cwd=tmp_path, env=env, stdout=subprocess.PIPE
    )
    assert proc.stdout is not None
    try:
        url = ""
        deadline = time.monotonic() + 60
        while not url and time.monotonic() < deadline:
            ready, _, _ = select.select([proc.stdout], [], [], 1.0)
            if ready:
                line = proc.stdout.readline().decode()
                assert line, "puma_start exited before printing its URL"
                if line.startswith("PUMA edge listening at "):
                    url = line.split()[-1]
        assert url
        children = psutil.Process(proc.pid).children(recursive=True)
        assert len(children) >= 4  # redis, master, workers, gunicorn, envoy

        reply = request(url, "POST", "/shout/call", body=b"hello")
        assert (reply.status, reply.body) == (200, b"HELLO!")
        reply = request(url, "POST", "/map/maths/fac", body=b"[0, 1, 5, 10]")
        assert reply.json() == [1, 1, 120, 3628800]
        # over Python's int-to-str limit: a JSON string of the decimal digits
        reply = request(url, "POST", "/map/maths/fac", body=b"[2000, 3]")
        assert reply.status == 200
        big, small = reply.json()
        assert (len(big), big[:20], big[-5:], small) == (5736, "33162750924506332411", "00000", 6)
        assert request(url, "POST", "/maths/missing", body=b"").status == 404

        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) == 0
        _gone, alive = psutil.wait_procs(children, timeout=10)
        assert alive == []
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        proc.stdout.close()


def test_puma_map_maps_a_function_on_palm_workers():
    def fac(n: int) -> int:
        return math.factorial(n)

    data = list(range(30))
    try:
        with pytest.warns(RuntimeWarning, match="local cluster"):
            assert asyncio.run(puma_map(fac, data)) == [math.factorial(n) for n in data]
    finally:
        puma_stop()
