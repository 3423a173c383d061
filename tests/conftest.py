"""Fixtures shared by every test: real processes, tracked and killed."""

from __future__ import annotations

import atexit
import os
import shutil
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from tests.fixtures.procs import Processes  # noqa: E402

# Embedded Redis servers and the local map secret of the processes under test
# live in a directory of this run, never in the user's data directory, and the
# directory goes when the run ends.
_RUN_DIR = tempfile.mkdtemp(prefix="palm-test-")
atexit.register(shutil.rmtree, _RUN_DIR, ignore_errors=True)
os.environ.setdefault("PALM_DATA_DIR", os.path.join(_RUN_DIR, "data"))
os.environ.setdefault("XDG_DATA_HOME", os.path.join(_RUN_DIR, "xdg"))

pytest_plugins = [
    name
    for name, path in (
        ("tests.fixtures.redis", ROOT / "tests/fixtures/redis.py"),
        ("tests.fixtures.edge", ROOT / "tests/fixtures/edge.py"),
    )
    if path.exists()
]


@pytest.fixture(scope="session", autouse=True)
def _session_redis() -> Iterator[str]:
    """One real redis-server for the whole run, configured as every process's Redis.

    Tests of the embedded Redis remove ``PALM_REDIS_URL`` for themselves.
    """
    from tests.fixtures.redis import RedisProcess

    data_dir = Path(tempfile.mkdtemp(prefix="palm-redis-"))
    server = RedisProcess(data_dir)
    server.start()
    previous = os.environ.get("PALM_REDIS_URL")
    os.environ["PALM_REDIS_URL"] = server.url
    try:
        yield server.url
    finally:
        if previous is None:
            os.environ.pop("PALM_REDIS_URL", None)
        else:
            os.environ["PALM_REDIS_URL"] = previous
        server.kill()
        shutil.rmtree(data_dir, ignore_errors=True)


@pytest.fixture
def procs() -> Iterator[Processes]:
    """Start real processes; every one still alive at teardown is SIGKILLed."""
    tracker = Processes(ROOT)
    try:
        yield tracker
    finally:
        tracker.kill_all()


@pytest.fixture(autouse=True)
def _repo_on_pythonpath(monkeypatch: pytest.MonkeyPatch) -> None:
    path = os.environ.get("PYTHONPATH", "")
    if str(ROOT) not in path.split(os.pathsep):
        monkeypatch.setenv("PYTHONPATH", os.pathsep.join(p for p in (str(ROOT), path) if p))
