"""The registry of running deployments: written, found by name or alone, stale
entries removed, ambiguity and absence said clearly."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from palm.errors import ConfigError
from palm.state import registry
from palm.state.registry import find_deployment, register, running_deployments, unregister


@pytest.fixture(autouse=True)
def _data_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("PALM_DATA_DIR", str(tmp_path / "data"))
    return tmp_path / "data"


def test_the_entry_is_found_with_no_name_and_by_name_and_removed_on_unregister(tmp_path):
    entry = register("shop", "unix:///tmp/x.sock", url="http://127.0.0.1:1", config="/a.yaml")
    assert entry.path.parent == tmp_path / "data" / "running"
    assert find_deployment() == entry and find_deployment("shop") == entry
    with pytest.raises(ConfigError, match=r"no running deployment 'other'; running: shop \(pid"):
        find_deployment("other")
    unregister(entry)
    assert running_deployments() == []
    with pytest.raises(ConfigError, match="no running deployment found"):
        find_deployment()


def test_two_running_deployments_need_a_name(tmp_path):
    mine = register("shop", "redis://127.0.0.1:1")
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        other = registry.RunningDeployment(
            name="blog", pid=sleeper.pid, redis="redis://127.0.0.1:2", cluster="blog"
        )
        other.path.write_text(json.dumps(other.__dict__))
        with pytest.raises(ConfigError, match=r"2 deployments are running: .*--deployment NAME"):
            find_deployment()
        assert find_deployment("blog").redis == "redis://127.0.0.1:2"
        assert find_deployment("shop") == mine
    finally:
        sleeper.kill()
        sleeper.wait()
    assert [e.name for e in running_deployments()] == ["shop"]
    assert not other.path.exists()  # the dead one's entry was removed


def test_an_entry_of_a_dead_or_reused_pid_is_stale(tmp_path):
    entry = register("shop", "redis://127.0.0.1:1")
    reused = registry.RunningDeployment(
        name="old", pid=os.getpid(), redis="r", cluster="old", create_time=1.0
    )
    assert entry.alive() and not reused.alive()
    entry.path.write_text("not json")
    assert running_deployments() == [] and not entry.path.exists()
