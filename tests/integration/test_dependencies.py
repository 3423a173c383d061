"""Shipped functions and their dependencies, with real master and worker processes.

The package ``palmdeptest`` is made on the spot (tests/fixtures/wheels.py):
version 2.0 is "installed" for the client (a directory on this process's
``sys.path`` only), a worker may have 1.0 on its ``PYTHONPATH``, or nothing,
and a wheelhouse holds the 2.0 wheel for workers that build environments.
Nothing needs the network.
"""

from __future__ import annotations

import importlib
import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from palm.errors import DependencyError
from palm.ops.environments import Environments
from palm.ops.processes import worker_command
from palm.standalone import ParallelClient
from tests.fixtures.procs import Processes, wait_for
from tests.fixtures.wheels import install, make_wheel

FAST = ("--heartbeat-interval-s", "0.2")
FUNCTION_WORKER = "palm.serve.worker:FunctionWorker"
PACKAGE = "palmdeptest"


def which_version(x: int) -> tuple[str, int, int]:
    """Needs palmdeptest; says which version ran it, and in which worker's child."""
    import palmdeptest  # type: ignore[import-not-found]

    return palmdeptest.VERSION, x * 2, os.getppid()


@pytest.fixture
def wheelhouse(tmp_path: Path) -> Path:
    make_wheel(tmp_path / "wheels", PACKAGE, "2.0")
    make_wheel(tmp_path / "old-wheels", PACKAGE, "1.0")
    return tmp_path / "wheels"


@pytest.fixture
def client_has_2(
    wheelhouse: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[None]:
    """palmdeptest 2.0 installed for this (the client's) process only."""
    site = install(wheelhouse / f"{PACKAGE}-2.0-py3-none-any.whl", tmp_path / "client-site")
    monkeypatch.syspath_prepend(str(site))
    importlib.import_module(PACKAGE)
    yield
    sys.modules.pop(PACKAGE, None)


def start_worker(
    procs: Processes, info: dict[str, Any], name: str, *extra: str, path: tuple[Path, ...] = ()
) -> subprocess.Popen[str]:
    command = worker_command(
        FUNCTION_WORKER,
        name,
        push=info["worker_push"],
        pull=info["worker_pull"],
        log_level="WARNING",
    )
    pythonpath = os.pathsep.join([str(procs.root), *map(str, path)])
    return procs.start(
        [*command, *FAST, *extra], env={"PYTHONPATH": pythonpath}, stdout=subprocess.DEVNULL
    )


def worker_count(info: dict[str, Any]) -> int:
    from palm.call.request import Client

    with Client(info["db"], info["name"], timeout_s=5) as probe:
        return len(probe.info()["workers"])


def client_of(info: dict[str, Any]) -> ParallelClient:
    return ParallelClient(
        info["push"], info["pull"], info["db"], info["name"], secret="test-secret", timeout_s=120
    )


def builds(cache: Path, what: str = "built") -> list[str]:
    return Environments(cache).builds(what)


@pytest.mark.timeout(120)
def test_a_worker_without_the_package_names_it_and_itself(
    procs: Processes, client_has_2: None
) -> None:
    _, info = procs.master("master", *FAST)
    start_worker(procs, info, "bare")
    wait_for(lambda: worker_count(info) >= 1)
    with client_of(info) as client, pytest.raises(DependencyError) as caught:
        client.map(which_version, range(4), chunksize=2)
    error = caught.value
    assert (error.package, error.wanted, error.found) == (PACKAGE, "2.0", None)
    assert (error.worker, error.host) == ("bare", socket.gethostname())
    assert f"{PACKAGE}==2.0" in str(error) and "not installed" in str(error)


@pytest.mark.timeout(120)
def test_a_version_mismatch_names_both_versions(
    procs: Processes, client_has_2: None, tmp_path: Path
) -> None:
    old = install(
        tmp_path / "old-wheels" / f"{PACKAGE}-1.0-py3-none-any.whl", tmp_path / "worker-site"
    )
    _, info = procs.master("master", *FAST)
    start_worker(procs, info, "old", path=(old,))
    wait_for(lambda: worker_count(info) >= 1)
    with client_of(info) as client, pytest.raises(DependencyError) as caught:
        client.map(which_version, range(4), chunksize=2)
    assert (caught.value.package, caught.value.wanted, caught.value.found) == (
        PACKAGE,
        "2.0",
        "1.0",
    )
    assert "old" in str(caught.value) and "it has 1.0" in str(caught.value)


@pytest.mark.timeout(120)
def test_a_worker_that_has_the_package_takes_the_jobs_another_refused(
    procs: Processes, client_has_2: None, tmp_path: Path, wheelhouse: Path
) -> None:
    good = install(wheelhouse / f"{PACKAGE}-2.0-py3-none-any.whl", tmp_path / "good-site")
    _, info = procs.master("master", *FAST)
    start_worker(procs, info, "bare")
    start_worker(procs, info, "good", path=(good,))
    wait_for(lambda: worker_count(info) >= 2)
    with client_of(info) as client:
        out = client.map(which_version, range(30), chunksize=1)
    assert [(v, y) for v, y, _ in out] == [("2.0", 2 * x) for x in range(30)]


def install_deps(cache: Path, wheelhouse: Path) -> tuple[str, ...]:
    return (
        "--install-deps",
        "--deps-cache",
        str(cache),
        "--find-links",
        str(wheelhouse),
        "--no-index",
    )


@pytest.mark.timeout(300)
def test_install_deps_builds_the_environment_once_and_reuses_it(
    procs: Processes, client_has_2: None, tmp_path: Path, wheelhouse: Path
) -> None:
    cache = tmp_path / "envs"
    _, info = procs.master("master", *FAST)
    start_worker(procs, info, "builder", *install_deps(cache, wheelhouse))
    wait_for(lambda: worker_count(info) >= 1)
    with client_of(info) as client:
        first = client.map(which_version, range(10), chunksize=2)
        assert [(v, y) for v, y, _ in first] == [("2.0", 2 * x) for x in range(10)]
        assert len(builds(cache)) == 1
        second = client.map(which_version, range(10, 20), chunksize=2)
    assert [(v, y) for v, y, _ in second] == [("2.0", 2 * x) for x in range(10, 20)]
    assert len(builds(cache)) == 1  # the same spec: no rebuild


@pytest.mark.timeout(300)
def test_two_workers_asking_for_one_spec_at_once_build_it_once(
    procs: Processes, client_has_2: None, tmp_path: Path, wheelhouse: Path
) -> None:
    cache = tmp_path / "envs"
    _, info = procs.master("master", *FAST)
    workers = [
        start_worker(procs, info, f"w{i}", *install_deps(cache, wheelhouse)) for i in range(2)
    ]
    wait_for(lambda: worker_count(info) >= 2)
    with client_of(info) as client:
        # one chunk a message (batch = 64 // chunksize), six messages: both workers
        # get some at once, while neither has the environment yet
        out = client.map(which_version, range(384), chunksize=64)
    assert [(v, y) for v, y, _ in out] == [("2.0", 2 * x) for x in range(384)]
    assert {ppid for _, _, ppid in out} == {w.pid for w in workers}  # both ran jobs
    assert len(builds(cache)) == 1
    assert len(builds(cache, "waited")) == 1  # the other waited for that build


@pytest.mark.timeout(300)
def test_a_failed_build_comes_back_with_the_installers_message(
    procs: Processes, client_has_2: None, tmp_path: Path
) -> None:
    empty = tmp_path / "empty-wheelhouse"
    empty.mkdir()
    _, info = procs.master("master", *FAST)
    start_worker(procs, info, "builder", *install_deps(tmp_path / "envs", empty))
    wait_for(lambda: worker_count(info) >= 1)
    with client_of(info) as client, pytest.raises(DependencyError) as caught:
        client.map(which_version, range(4), chunksize=2)
    assert caught.value.package == PACKAGE
    detail = caught.value.detail
    assert detail.startswith("pip install failed") and f"{PACKAGE}==2.0" in detail
    assert "No matching distribution" in detail  # pip's own words
    assert not (tmp_path / "envs" / "builds.log").exists()


@pytest.mark.timeout(120)
def test_a_function_from_a_module_only_the_client_has_runs_remotely(
    procs: Processes, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    source = tmp_path / "only-here"
    source.mkdir()
    (source / "palm_local_helpers.py").write_text(
        "import math\n"
        "SCALE = 3\n"
        "def scale(x):\n"
        "    return SCALE * x + int(math.sqrt(16))\n"
        "class Adder:\n"
        "    def __init__(self, k):\n"
        "        self.k = k\n"
        "    def __call__(self, x):\n"
        "        return scale(x) + self.k\n"
    )
    monkeypatch.syspath_prepend(str(source))
    helpers = importlib.import_module("palm_local_helpers")
    try:
        _, info = procs.master("master", *FAST)
        start_worker(procs, info, "stranger")
        wait_for(lambda: worker_count(info) >= 1)
        with client_of(info) as client:
            assert client.map(helpers.scale, range(5)) == [3 * x + 4 for x in range(5)]
            assert client.map(helpers.Adder(10), range(5)) == [3 * x + 14 for x in range(5)]
    finally:
        sys.modules.pop("palm_local_helpers", None)


@pytest.mark.timeout(300)
def test_the_built_environment_shadows_the_version_the_worker_has(
    procs: Processes, client_has_2: None, tmp_path: Path, wheelhouse: Path
) -> None:
    old = install(
        tmp_path / "old-wheels" / f"{PACKAGE}-1.0-py3-none-any.whl", tmp_path / "worker-site"
    )
    _, info = procs.master("master", *FAST)
    start_worker(procs, info, "old", *install_deps(tmp_path / "envs", wheelhouse), path=(old,))
    wait_for(lambda: worker_count(info) >= 1)
    with client_of(info) as client:
        out = client.map(which_version, range(6), chunksize=2)
    assert {version for version, _, _ in out} == {"2.0"}  # not the worker's own 1.0
