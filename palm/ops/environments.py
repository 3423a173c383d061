"""Environments on demand: a virtual environment per dependency spec, built once.

A worker started with ``--install-deps`` runs the ``map`` chunks of a
function whose packages it lacks in a child process started in an
environment built for that function's spec (:class:`EnvironmentRunner`):

* :class:`Environments` keeps one virtual environment per spec hash under a
  cache directory. It is built with ``uv`` when it is on ``PATH``, else with
  ``python -m venv`` and this interpreter's pip (``pip --python``), from the
  index or wheelhouse it is given (``find_links``, ``index_url``,
  ``no_index``). A file lock per hash makes concurrent requests, from any
  process, build it once; a failed build raises :class:`BuildFailed` with
  the installer's message and leaves nothing behind. Beyond ``max_envs``
  environments, the least recently used ones are removed.
* palm itself comes into an environment by a ``.pth`` file written after the
  install: it *appends* palm's directory and this interpreter's
  site-packages to the environment's ``sys.path``, so the spec's packages,
  installed in the environment, come first and shadow any other version,
  while palm and its own dependencies are found behind them.
"""

from __future__ import annotations

import logging
import os
import shutil
import site
import subprocess
import sys
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from pathlib import Path

import palm
from palm.errors import PalmError
from palm.wire.deps import Spec

__all__ = ["BuildFailed", "EnvironmentRunner", "Environments", "default_cache"]

log = logging.getLogger("palm.environments")

_READY = ".palm-ready"
_USED = ".palm-used"
_BUILDS = "builds.log"


class BuildFailed(PalmError):
    """An environment for a spec could not be built; the message is the installer's."""


def default_cache() -> Path:
    """``$PALM_DEPS_CACHE``, else ``$XDG_CACHE_HOME/palm/envs`` (default ``~/.cache``)."""
    given = os.environ.get("PALM_DEPS_CACHE")
    if given:
        return Path(given)
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "palm" / "envs"


class Environments:
    """Virtual environments, one per spec hash, under ``root``."""

    def __init__(
        self,
        root: Path | None = None,
        *,
        find_links: list[str] | None = None,
        index_url: str | None = None,
        no_index: bool = False,
        max_envs: int = 8,
        installer_timeout_s: float = 600.0,
    ) -> None:
        self.root = Path(root) if root is not None else default_cache()
        # a local wheelhouse by its absolute path: installers run from elsewhere
        self.find_links = [
            str(Path(link).resolve()) if Path(link).exists() else link for link in find_links or []
        ]
        self.index_url = index_url
        self.no_index = no_index
        self.max_envs = max(1, max_envs)
        self.installer_timeout_s = installer_timeout_s

    def path(self, spec: Spec) -> Path:
        """The environment directory of ``spec``."""
        return self.root / spec.hash

    def python(self, spec: Spec) -> Path:
        """The interpreter of ``spec``'s environment."""
        return self.path(spec) / "bin" / "python"

    def builds(self, what: str = "built") -> list[str]:
        """The hashes built so far under this root, one per build, oldest first.

        ``what="waited"``: one per time a process waited for another's build.
        """
        log_file = self.root / _BUILDS
        if not log_file.exists():
            return []
        lines = [line.split() for line in log_file.read_text().splitlines()]
        return [words[0] for words in lines if len(words) == 3 and words[1] == what]

    def ensure(self, spec: Spec) -> Path:
        """The interpreter of ``spec``'s environment, built first if it is not there."""
        self.root.mkdir(parents=True, exist_ok=True)
        where = self.path(spec)
        if (where / _READY).exists():
            self.touch(spec)
            return self.python(spec)
        from filelock import FileLock  # loaded by workers that build environments only

        with FileLock(str(self.root / f"{spec.hash}.lock")):
            if not (where / _READY).exists():
                self._build(spec, where)
            else:  # another process built it while this one waited for the lock
                with open(self.root / _BUILDS, "a") as out:
                    out.write(f"{spec.hash} waited 0\n")
        self.touch(spec)
        self._evict(keep=spec.hash)
        return self.python(spec)

    def touch(self, spec: Spec) -> None:
        """Mark ``spec``'s environment as just used (for least-recently-used eviction)."""
        try:
            (self.path(spec) / _USED).touch()
        except FileNotFoundError:
            pass

    def _build(self, spec: Spec, where: Path) -> None:
        shutil.rmtree(where, ignore_errors=True)  # what a killed build left
        start = time.monotonic()
        try:
            self._run([sys.executable, "-m", "venv", "--without-pip", str(where)])
            python = where / "bin" / "python"
            if spec.packages:
                self._run([*self._installer(python), *self._sources(), *spec.requirements()])
            self._link_palm(python)
        except BaseException:
            shutil.rmtree(where, ignore_errors=True)
            raise
        (where / _READY).write_text(spec.to_json().decode())
        seconds = time.monotonic() - start
        with open(self.root / _BUILDS, "a") as out:
            out.write(f"{spec.hash} built {seconds:.2f}\n")
        log.info("built the environment %s in %.1f s: %s", spec.hash, seconds, spec.requirements())

    def _installer(self, python: Path) -> list[str]:
        uv = shutil.which("uv")
        if uv is not None:
            return [uv, "pip", "install", "--python", str(python)]
        return [
            sys.executable,
            "-m",
            "pip",
            "--python",
            str(python),
            "install",
            "--no-input",
            "--disable-pip-version-check",
        ]

    def _sources(self) -> list[str]:
        out: list[str] = []
        for link in self.find_links:
            out += ["--find-links", link]
        if self.index_url:
            out += ["--index-url", self.index_url]
        if self.no_index:
            out.append("--no-index")
        return out

    def _run(self, command: list[str]) -> None:
        try:
            done = subprocess.run(
                command,
                capture_output=True,
                text=True,
                timeout=self.installer_timeout_s,
                stdin=subprocess.DEVNULL,
            )
        except subprocess.TimeoutExpired as exc:
            raise BuildFailed(f"{command[0]} took over {exc.timeout} s") from exc
        if done.returncode != 0:
            said = (done.stderr.strip() or done.stdout.strip())[-2000:]
            what = "uv" if Path(command[0]).name == "uv" else " ".join(command[1:3])
            if "pip" in command:
                what = "uv pip install" if what == "uv" else "pip install"
            raise BuildFailed(f"{what} failed ({done.returncode}): {said}")

    def _link_palm(self, python: Path) -> None:
        """A ``.pth`` appending palm and this interpreter's site-packages to the path."""
        purelib = subprocess.run(
            [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        palm_root = str(Path(palm.__file__).resolve().parent.parent)
        sites = [p for p in site.getsitepackages() if Path(p).is_dir()]
        line = (
            f"import site, sys; sys.path.append({palm_root!r}); "
            f"list(map(site.addsitedir, {sites!r}))\n"
        )
        Path(purelib, "zz_palm_worker.pth").write_text(line)

    def _evict(self, keep: str) -> None:
        """Remove the least recently used environments beyond ``max_envs``."""
        ready = [p for p in self.root.iterdir() if (p / _READY).exists()]
        if len(ready) <= self.max_envs:
            return
        ready.sort(key=_last_used)
        from filelock import FileLock, Timeout

        for old in ready[: len(ready) - self.max_envs]:
            if old.name == keep:
                continue
            try:
                with FileLock(str(self.root / f"{old.name}.lock"), timeout=0):
                    shutil.rmtree(old, ignore_errors=True)
                log.info("removed the least recently used environment %s", old.name)
            except Timeout:
                continue  # being built or removed by another process


def _last_used(env: Path) -> float:
    try:
        return (env / _USED).stat().st_mtime
    except FileNotFoundError:
        return 0.0


class EnvironmentRunner:
    """Runs map chunks in child processes started in environments built on demand.

    Given to a worker as its ``elsewhere``: for a spec this worker's
    environment does not meet, it builds (or finds) the spec's environment and
    hands the chunk, verified and untouched, to a child process
    (:mod:`palm.ops.env_runner`) running in it, which checks, runs and tags
    it with the same secret. A build that failed is not tried again by this
    worker: its message is the answer for every chunk of that spec.
    """

    def __init__(
        self,
        environments: Environments,
        worker: str,
        secret: Callable[[], bytes | None],
        *,
        max_children: int = 4,
    ) -> None:
        self.environments = environments
        self.worker = worker
        self.secret = secret
        self.max_children = max(1, max_children)
        self.failed: dict[str, str] = {}
        self._children: OrderedDict[str, subprocess.Popen[bytes]] = OrderedDict()
        self._lock = threading.Lock()

    def __call__(self, spec: Spec, payload: bytes) -> bytes | str:
        if spec.hash in self.failed:
            return self.failed[spec.hash]
        with self._lock:
            try:
                child = self._child(spec)
                return _exchange(child, payload)
            except BuildFailed as exc:
                self.failed[spec.hash] = str(exc)
                return str(exc)
            except OSError as exc:
                self._stop(spec.hash)
                return f"the environment's process failed: {exc}"
            except Exception as exc:  # never let a chunk take the worker down
                self._stop(spec.hash)
                return f"the environment could not be made: {type(exc).__name__}: {exc}"

    def _child(self, spec: Spec) -> subprocess.Popen[bytes]:
        child = self._children.get(spec.hash)
        if child is not None and child.poll() is None:
            self._children.move_to_end(spec.hash)
            return child
        python = self.environments.ensure(spec)
        secret = self.secret()
        env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME")}
        env["PALM_RUNNER_SECRET"] = secret.hex() if secret is not None else ""
        child = subprocess.Popen(
            [str(python), "-m", "palm.ops.env_runner", self.worker],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            env=env,
            cwd=str(self.environments.path(spec)),
        )
        self._children[spec.hash] = child
        while len(self._children) > self.max_children:
            self._stop(next(iter(self._children)))
        return child

    def _stop(self, key: str) -> None:
        child = self._children.pop(key, None)
        if child is None:
            return
        if child.stdin is not None:
            child.stdin.close()
        try:
            child.wait(5)
        except subprocess.TimeoutExpired:
            child.kill()
            child.wait()
        if child.stdout is not None:
            child.stdout.close()

    def close(self) -> None:
        """Stop every child process."""
        with self._lock:
            for key in list(self._children):
                self._stop(key)


def _exchange(child: subprocess.Popen[bytes], payload: bytes) -> bytes:
    assert child.stdin is not None and child.stdout is not None
    child.stdin.write(len(payload).to_bytes(4, "big") + payload)
    child.stdin.flush()
    head = child.stdout.read(4)
    if len(head) < 4:
        raise OSError(f"it exited ({child.wait()}) without an answer")
    size = int.from_bytes(head, "big")
    answer = child.stdout.read(size)
    if len(answer) < size:
        raise OSError("its answer was cut short")
    return answer
