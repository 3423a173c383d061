"""The Docker backend's bookkeeping, with a stand-in for the docker package's client."""

from __future__ import annotations

from typing import Any

import pytest

from palm.errors import ConfigError
from palm.workers.containers import DockerBackend, parse_volume


class FakeContainer:
    def __init__(self, name: str, labels: dict[str, str], created: int) -> None:
        self.name = name
        self.labels = labels
        self.status = "running"
        self.signals: list[str] = []
        self.removed = False
        self.attrs: dict[str, Any] = {"Created": f"{created:04d}", "State": {"ExitCode": 0}}

    def kill(self, signal: str = "SIGKILL") -> None:
        self.signals.append(signal)
        if signal == "SIGKILL":
            self.status = "exited"

    def remove(self, force: bool = False) -> None:
        self.removed = True


class FakeContainers:
    def __init__(self) -> None:
        self.all: list[FakeContainer] = []
        self.runs: list[dict[str, Any]] = []

    def list(self, **options: Any) -> list[FakeContainer]:
        wanted = dict(label.split("=", 1) for label in options.get("filters", {}).get("label", []))
        return [
            c
            for c in self.all
            if not c.removed
            and (options.get("all") or c.status == "running")
            and all(c.labels.get(k) == v for k, v in wanted.items())
        ]

    def run(self, image: str, command: list[str], **options: Any) -> FakeContainer:
        self.runs.append({"image": image, "command": command, **options})
        container = FakeContainer(options["name"], options["labels"], len(self.all))
        self.all.append(container)
        return container

    def get(self, name: str) -> FakeContainer:
        return next(c for c in self.all if c.name == name and not c.removed)


class FakeClient:
    def __init__(self) -> None:
        self.containers = FakeContainers()

    def close(self) -> None:
        pass


def backend(client: FakeClient, **options: Any) -> DockerBackend:
    return DockerBackend(
        "img", "pkg.mod:W", "tcp://10.0.0.5:5575", pool="p", client=client, **options
    )


def test_it_starts_labelled_workers_and_finds_them_again() -> None:
    client = FakeClient()
    first = backend(client, volumes=["/venv:/venv:ro"], environment={"A": "1"})
    first.scale_to(3)
    run = client.containers.runs[0]
    assert run["labels"] == {"palm.pool": "p", "palm.master": "tcp://10.0.0.5:5575"}
    assert run["volumes"] == {"/venv": {"bind": "/venv", "mode": "ro"}}
    assert run["network_mode"] == "host" and run["environment"] == {"A": "1"}
    assert run["command"][:4] == ["python3", "-m", "palm.ops.worker_process", "pkg.mod:W"]
    assert run["command"][4] == run["name"]  # the worker is named after its container
    assert "--db" in run["command"]
    again = backend(client)  # a controller that restarted
    assert again.census().alive == [c.name for c in client.containers.all]
    other = DockerBackend("img", "pkg.mod:W", "tcp://elsewhere:1", pool="p", client=client)
    assert other.census().alive == []  # another master's pool is not ours


def test_scale_in_asks_the_newest_to_leave_then_reaps_them() -> None:
    client = FakeClient()
    b = backend(client, grace_s=60)
    b.scale_to(3)
    b.scale_to(1)
    oldest, *newer = client.containers.all
    assert all(c.signals == ["SIGTERM"] for c in newer) and oldest.signals == []
    census = b.census()
    assert (census.alive, census.stopping, census.died) == ([oldest.name], 2, [])
    for c in newer:
        c.status = "exited"  # the workers left
    census = b.census()
    assert (census.stopping, census.died) == (0, [])
    assert all(c.removed for c in newer)


def test_a_container_past_its_grace_is_killed() -> None:
    client = FakeClient()
    b = backend(client, grace_s=0)
    b.scale_to(1)
    b.scale_to(0)
    b.census()
    assert client.containers.all[0].signals == ["SIGTERM", "SIGKILL"]


def test_a_container_that_ends_unasked_is_reported_dead_and_removed() -> None:
    client = FakeClient()
    b = backend(client)
    b.scale_to(2)
    gone = client.containers.all[0]
    gone.status = "exited"
    census = b.census()
    assert census.died == [gone.name] and gone.removed
    assert len(census.alive) == 1


def test_volumes_are_checked() -> None:
    assert parse_volume("/a:/b") == ("/a", {"bind": "/b", "mode": "rw"})
    for bad in ("/a", "/a:/b:rx", ":/b"):
        with pytest.raises(ConfigError):
            parse_volume(bad)
