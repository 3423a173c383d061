"""The wheel as a newcomer gets it: built, installed into a fresh virtual environment
(no system site-packages, no checkout on the path), and ``palm up --once`` run from
an empty directory with a deployment file of the package's own demo services."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import zipfile
from pathlib import Path

import psutil
import pytest

import palm

ROOT = Path(__file__).resolve().parents[2]
pytestmark = [pytest.mark.timeout(600), pytest.mark.slow]

DEPLOYMENT = """\
name: wheel
edge: {port: 0, auth: open}
services:
  echo: {kind: standalone, server: "palm.demo:DemoServer"}
  demo: {kind: parallel, worker: "palm.demo:DemoWorker", workers: 1}
  maths: {kind: function, functions: {factorial: "palm.demo:factorial"}, workers: 1}
"""


def _clean_env(home: Path) -> dict[str, str]:
    """This environment without anything pointing at the checkout or its venv."""
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("PYTHONPATH", "VIRTUAL_ENV", "PALM_REDIS_URL", "PALM_CLUSTER", "PALM_KEYS")
    }
    env["XDG_DATA_HOME"] = str(home / "data")
    env.pop("PALM_DATA_DIR", None)
    return env


def _run(cmd: list[str], cwd: Path, env: dict[str, str], timeout_s: float) -> str:
    done = subprocess.run(
        cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout_s, check=False
    )
    assert done.returncode == 0, f"{cmd}\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    return done.stdout


def test_the_wheel_installs_in_a_fresh_venv_and_runs_palm_up(tmp_path: Path) -> None:
    env = _clean_env(tmp_path)
    dist = tmp_path / "dist"
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check"]
    _run([*pip, "wheel", "--no-deps", "-q", "-w", str(dist), str(ROOT)], tmp_path, env, 300)
    (wheel,) = dist.glob("*.whl")
    assert wheel.name.startswith(f"palm_zmq-{palm.__version__}-")
    names = zipfile.ZipFile(wheel).namelist()
    tops = {name.split("/", 1)[0] for name in names}
    assert {top for top in tops if not top.endswith(".dist-info")} == {"palm"}
    assert "palm/gateway/envoy/bootstrap.yaml" in names

    venv = tmp_path / "venv"
    _run([sys.executable, "-m", "venv", str(venv)], tmp_path, env, 120)
    python = str(venv / "bin" / "python")
    _run([python, "-m", "pip", "install", "-q", str(wheel)], tmp_path, env, 400)

    # nothing of the checkout is importable from there: palm comes from the venv
    work = tmp_path / "empty"
    work.mkdir()
    where = _run(
        [
            python,
            "-c",
            "import importlib.metadata as m, palm; print(palm.__file__); "
            "print(m.version('palm-zmq'))",
        ],
        work,
        env,
        60,
    ).split()
    assert where[0].startswith(str(venv)) and where[1] == palm.__version__

    (work / "palm.yaml").write_text(textwrap.dedent(DEPLOYMENT))
    up = subprocess.Popen(
        [str(venv / "bin" / "palm"), "up", "--once"],
        cwd=work,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    try:
        out, _ = up.communicate(timeout=150)
    finally:
        if up.poll() is None:
            for child in psutil.Process(up.pid).children(recursive=True):
                child.kill()
            up.kill()
            up.wait(30)
    assert up.returncode == 0, out
    assert "POST /echo/foo -> 200 you sent me hello" in out
    assert "POST /maths/factorial -> 200 3628800" in out
    assert "POST /map/maths/factorial -> 200 [1,2,6,24]" in out
    assert "POST /demo/foo -> 200" in out
    assert "Stop with Ctrl-C" not in out
