"""The running deployments of this user, so ``palm logs`` and ``palm stats`` find them.

``palm up`` writes one small JSON file per run into ``<data home>/running/``
(``$PALM_DATA_DIR``, else ``$XDG_DATA_HOME/palm``, else
``~/.local/share/palm``) saying where the deployment's Redis is and under
which cluster name, and removes it when it stops. An entry whose process is
gone (``palm up`` killed with SIGKILL) is removed by the next reader.

:func:`find_deployment` picks the one running deployment (or the one of a
given name) and says clearly when there is none or more than one.
"""

from __future__ import annotations

import contextlib
import json
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import psutil

from palm.errors import ConfigError

__all__ = [
    "RunningDeployment",
    "find_deployment",
    "register",
    "registry_dir",
    "running_deployments",
    "unregister",
]


def registry_dir() -> Path:
    """Where the entries live: ``<data home>/running``."""
    home = os.environ.get("PALM_DATA_DIR")
    if home:
        return Path(home) / "running"
    base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(base) / "palm" / "running"


@dataclass(frozen=True)
class RunningDeployment:
    """One running ``palm up``: what a reader needs to reach its Redis."""

    name: str
    pid: int
    redis: str
    #: the prefix of its Redis keys (the file's ``name``)
    cluster: str
    url: str = ""
    config: str = ""
    started: float = 0.0
    #: the process's start time, so a reused PID is not taken for it
    create_time: float = 0.0

    @property
    def path(self) -> Path:
        return registry_dir() / f"{self.pid}.json"

    def alive(self) -> bool:
        try:
            process = psutil.Process(self.pid)
            return abs(process.create_time() - self.create_time) < 1.0 or not self.create_time
        except psutil.Error:
            return False


def register(
    name: str, redis: str, *, cluster: str | None = None, url: str = "", config: str = ""
) -> RunningDeployment:
    """Record this process as running deployment ``name`` (atomically)."""
    pid = os.getpid()
    entry = RunningDeployment(
        name=name,
        pid=pid,
        redis=redis,
        cluster=cluster or name,
        url=url,
        config=config,
        started=time.time(),
        create_time=psutil.Process(pid).create_time(),
    )
    directory = registry_dir()
    directory.mkdir(parents=True, exist_ok=True)
    partial = directory / f".{pid}.json.partial"
    partial.write_text(json.dumps(asdict(entry), indent=2))
    partial.replace(entry.path)
    return entry


def unregister(entry: RunningDeployment) -> None:
    """Remove the entry (nothing when it is already gone)."""
    with contextlib.suppress(FileNotFoundError):
        entry.path.unlink()


def _read(path: Path) -> RunningDeployment | None:
    try:
        data = json.loads(path.read_text())
        return RunningDeployment(**data)
    except (OSError, ValueError, TypeError):
        return None


def running_deployments() -> list[RunningDeployment]:
    """The live entries, oldest first; entries of dead processes are removed."""
    found: list[RunningDeployment] = []
    directory = registry_dir()
    if not directory.is_dir():
        return found
    for path in sorted(directory.glob("*.json")):
        entry = _read(path)
        if entry is not None and entry.alive():
            found.append(entry)
        else:
            with contextlib.suppress(OSError):
                path.unlink()
    return sorted(found, key=lambda e: e.started)


def _describe(entries: list[RunningDeployment]) -> str:
    return ", ".join(f"{e.name} (pid {e.pid}{f', {e.url}' if e.url else ''})" for e in entries)


def find_deployment(name: str | None = None) -> RunningDeployment:
    """The running deployment called ``name``, or the only one running.

    ConfigError when there is none, or more than one to choose from (naming them).
    """
    running = running_deployments()
    chosen = [e for e in running if name is None or e.name == name]
    if len(chosen) == 1:
        return chosen[0]
    if not running:
        raise ConfigError(
            f"no running deployment found in {registry_dir()} (start one with 'palm up', "
            "or give --redis URL)"
        )
    if not chosen:
        raise ConfigError(f"no running deployment {name!r}; running: {_describe(running)}")
    which = f"{len(chosen)} deployments{f' named {name!r}' if name else ''} are running"
    raise ConfigError(
        f"{which}: {_describe(chosen)}; pick one with --deployment NAME or --redis URL"
    )
