"""Fixtures shared by every test: real processes, tracked and killed."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from tests.fixtures.procs import Processes  # noqa: E402

pytest_plugins = [
    name
    for name, path in (
        ("tests.fixtures.redis", ROOT / "tests/fixtures/redis.py"),
        ("tests.fixtures.edge", ROOT / "tests/fixtures/edge.py"),
    )
    if path.exists()
]


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
