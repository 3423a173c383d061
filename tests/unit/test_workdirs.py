"""Work directories that name their owner, removed once that owner is dead."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from palm.ops.processes import OWNER_FILE, claim_workdir, popen, remove_stale_workdirs


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def _workdir(parent: Path, name: str, owner: dict[str, object] | None) -> Path:
    path = parent / name
    (path / "functions").mkdir(parents=True)
    (path / "functions" / "f.pkl").write_bytes(b"x" * 100)
    if owner is not None:
        (path / OWNER_FILE).write_text(json.dumps(owner))
    return path


def test_only_the_workdirs_of_dead_owners_are_removed(tmp_path: Path) -> None:
    mine = tmp_path / "palm-up-live"
    mine.mkdir()
    claim_workdir(mine)
    dead = _workdir(tmp_path, "palm-up-dead", {"pid": _dead_pid(), "create_time": 1.0})
    # this process's PID, but a start time that is not this process's: PID reuse
    reused = _workdir(tmp_path, "palm-up-reused", {"pid": os.getpid(), "create_time": 1.0})
    unclaimed = _workdir(tmp_path, "palm-up-starting", None)
    garbled = _workdir(tmp_path, "palm-up-garbled", None)
    (garbled / OWNER_FILE).write_text("{not json")
    other = _workdir(tmp_path, "other-dead", {"pid": _dead_pid(), "create_time": 1.0})

    removed = remove_stale_workdirs(tmp_path, "palm-up-")

    assert sorted(removed) == sorted([dead, reused])
    assert not dead.exists() and not reused.exists()
    for kept in (mine, unclaimed, garbled, other):
        assert kept.is_dir(), kept


def test_a_missing_parent_directory_is_fine(tmp_path: Path) -> None:
    assert remove_stale_workdirs(tmp_path / "nowhere", "palm-up-") == []


def test_popen_sets_its_own_preexec_fn() -> None:
    with pytest.raises(ValueError):
        popen([sys.executable, "-c", "pass"], preexec_fn=lambda: None)
