"""The container backend of the scaling controller: the Docker Engine API.

:class:`DockerBackend` starts worker containers from a configured image
through the ``docker`` package. Each runs one worker process
(``python -m palm.ops.worker_process SPEC NAME --db DB``) that learns the
master's other addresses from its db address, and carries the labels
``palm.pool=<pool>`` and ``palm.master=<db address>``: a controller that
restarts finds its own containers again by those labels and goes on from
there (it neither starts a second set nor orphans the first).

Scaling in sends SIGTERM to the newest containers: the worker leaves its
master gracefully (no job lost or run twice) and its container exits; one
still running ``grace_s`` later is killed. Containers that exited are
removed. A container that exits without having been asked is reported as
died, and the controller replaces it only if the backlog still needs it.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Mapping, Sequence
from typing import Any

import docker
from docker.errors import APIError, NotFound

from palm.errors import ConfigError
from palm.ops.processes import worker_command
from palm.workers.controller import Census

__all__ = ["DockerBackend", "parse_volume"]

log = logging.getLogger(__name__)

POOL_LABEL = "palm.pool"
MASTER_LABEL = "palm.master"
_ALIVE = ("created", "running", "restarting")


def parse_volume(text: str) -> tuple[str, dict[str, str]]:
    """``SRC:DST[:ro|rw]`` as the ``volumes`` entry of the ``docker`` package."""
    parts = text.split(":")
    if len(parts) not in (2, 3) or not parts[0] or not parts[1]:
        raise ConfigError(f"a volume is SRC:DST or SRC:DST:ro, not {text!r}")
    mode = parts[2] if len(parts) == 3 else "rw"
    if mode not in ("ro", "rw"):
        raise ConfigError(f"a volume's mode is ro or rw, not {mode!r}")
    return parts[0], {"bind": parts[1], "mode": mode}


class DockerBackend:
    """Worker containers of one pool, on one Docker engine."""

    kind = "container"

    def __init__(
        self,
        image: str,
        spec: str,
        db_address: str,
        *,
        pool: str = "worker",
        docker_url: str | None = None,
        python: str = "python3",
        credit: int | None = None,
        heartbeat_interval_s: float | None = None,
        log_level: str | None = None,
        environment: Mapping[str, str] | None = None,
        volumes: Sequence[str] = (),
        network_mode: str | None = "host",
        grace_s: float = 10.0,
        client: Any = None,
    ) -> None:
        self.image = image
        self.spec = spec
        self.db_address = db_address
        self.pool = pool
        self.python = python
        self.credit = credit
        self.heartbeat_interval_s = heartbeat_interval_s
        self.log_level = log_level
        self.environment = dict(environment or {})
        self.volumes = dict(parse_volume(v) for v in volumes)
        self.network_mode = network_mode
        self.grace_s = grace_s
        self.client = client or (
            docker.DockerClient(base_url=docker_url) if docker_url else docker.from_env()
        )
        #: containers asked to leave: name -> the time they must be gone by
        self.stopping: dict[str, float] = {}
        self.started = 0

    # what there is -----------------------------------------------------------------

    def _mine(self) -> list[Any]:
        labels = [f"{POOL_LABEL}={self.pool}", f"{MASTER_LABEL}={self.db_address}"]
        # a container removed between listing and inspecting is simply gone
        containers: list[Any] = self.client.containers.list(
            all=True, filters={"label": labels}, ignore_removed=True
        )
        containers.sort(key=lambda c: c.attrs.get("Created", ""))
        return containers

    def census(self) -> Census:
        """The pool's live containers (oldest first), reaping those that ended."""
        now = time.monotonic()
        census = Census()
        for container in self._mine():
            name = container.name
            if container.status in _ALIVE:
                if name in self.stopping:
                    if now >= self.stopping[name]:
                        log.warning("container %s outlived its grace period: killed", name)
                        self._quietly(container.kill)
                    census.stopping += 1
                else:
                    census.alive.append(name)
                continue
            if name in self.stopping:
                del self.stopping[name]
                log.info("container %s left (exit %s)", name, _exit_code(container))
            else:
                census.died.append(name)
                log.warning("container %s ended on its own (exit %s)", name, _exit_code(container))
            self._quietly(container.remove, force=True)
        return census

    # starting and stopping --------------------------------------------------------

    def _command(self, name: str) -> list[str]:
        return worker_command(
            self.spec,
            name,
            db=self.db_address,
            credit=self.credit,
            heartbeat_interval_s=self.heartbeat_interval_s,
            log_level=self.log_level,
            python=self.python,
        )

    def start_one(self) -> str:
        """Start one worker container; its name (also the worker's name)."""
        name = f"{self.pool}-{uuid.uuid4().hex[:8]}"
        self.client.containers.run(
            self.image,
            self._command(name),
            name=name,
            detach=True,
            labels={POOL_LABEL: self.pool, MASTER_LABEL: self.db_address},
            environment=self.environment,
            volumes=self.volumes,
            network_mode=self.network_mode,
            stop_signal="SIGTERM",
        )
        self.started += 1
        log.info("started container %s from %s", name, self.image)
        return name

    def stop_one(self, name: str) -> None:
        """Ask a container's worker to leave (SIGTERM); :meth:`census` reaps it."""
        self.stopping[name] = time.monotonic() + self.grace_s
        try:
            self.client.containers.get(name).kill(signal="SIGTERM")
        except (NotFound, APIError) as exc:
            log.info("container %s could not be signalled: %s", name, exc)
        log.info("container %s asked to leave", name)

    def scale_to(self, desired: int) -> None:
        alive = self.census().alive
        for _ in range(desired - len(alive)):
            self.start_one()
        for name in reversed(alive[desired:] if desired < len(alive) else []):
            self.stop_one(name)

    def remove_all(self) -> None:
        """Kill and remove every container of the pool at once (a hard stop)."""
        for container in self._mine():
            self._quietly(container.remove, force=True)
        self.stopping.clear()

    def close(self) -> None:
        self.client.close()

    @staticmethod
    def _quietly(call: Any, **kwargs: Any) -> None:
        try:
            call(**kwargs)
        except (NotFound, APIError) as exc:
            log.info("docker: %s", exc)


def _exit_code(container: Any) -> object:
    return container.attrs.get("State", {}).get("ExitCode")
