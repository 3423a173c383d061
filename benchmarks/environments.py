"""Interpreters for the cases, the peers' virtual environments, versions and machine facts.

palm and the standard-library baselines run in the interpreter that runs the suite.
The peers live in ``.peers-venv/`` and pylm 0.14.4 in ``.pylm-venv/`` (at the repository
root), created and filled with pip on first use; they never become palm dependencies.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import os
import platform
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import psutil

from benchmarks.redis_server import REDIS_ENV, redis_executable
from benchmarks.timing import Sampler

REPO_ROOT = Path(__file__).resolve().parent.parent
INSTALL_TIMEOUT_S = 1_800.0
MARKER = ".palm-bench-packages"


@dataclass(frozen=True)
class Venv:
    name: str
    packages: tuple[str, ...]
    dists: tuple[str, ...]  # distributions whose versions the report shows

    @property
    def path(self) -> Path:
        return REPO_ROOT / self.name

    @property
    def python(self) -> Path:
        return self.path / "bin" / "python"


PEERS = Venv(
    ".peers-venv",
    ("celery[redis]", "dask[distributed]", "ray", "rq", "redis", "matplotlib", "psutil", "pyzmq"),
    ("celery", "kombu", "dask", "distributed", "ray", "rq", "redis", "matplotlib"),
)
PYLM = Venv(
    ".pylm-venv",
    ("pylm==0.14.4", "protobuf<3.21", "psutil"),
    ("pylm", "protobuf", "pyzmq"),
)
PALM_DISTS = ("pyzmq", "msgpack", "cloudpickle", "psutil")


@dataclass(frozen=True)
class Ready:
    """An interpreter, or the reason there is none (``python`` is then None)."""

    python: str | None
    reason: str = ""


def ensure(venv: Venv, install: bool) -> Ready:
    """The venv's interpreter, creating the venv and installing its packages if allowed."""
    marker = venv.path / MARKER
    wanted = "\n".join(venv.packages)
    if venv.python.exists() and marker.exists() and marker.read_text() == wanted:
        return Ready(str(venv.python))
    if not install:
        return Ready(None, f"{venv.name} not installed (installation not allowed in this mode)")
    print(f"[bench] installing {', '.join(venv.packages)} into {venv.name} ...", file=sys.stderr)
    try:
        if not venv.python.exists():
            subprocess.run(
                [sys.executable, "-m", "venv", str(venv.path)],
                check=True, capture_output=True, timeout=INSTALL_TIMEOUT_S,
            )  # fmt: skip
        pip = [str(venv.python), "-m", "pip", "install", "--quiet", "--disable-pip-version-check"]
        done = subprocess.run(
            [*pip, *venv.packages], capture_output=True, text=True, timeout=INSTALL_TIMEOUT_S
        )
    except (OSError, subprocess.SubprocessError) as exc:
        return Ready(None, f"cannot create {venv.name}: {exc}")
    if done.returncode != 0:
        # Install what can be installed; the cases of the rest report their ImportError.
        for package in venv.packages:
            subprocess.run([*pip, package], capture_output=True, timeout=INSTALL_TIMEOUT_S)
        return Ready(str(venv.python), f"pip failed: {_last_line(done.stderr)}")
    marker.write_text(wanted)
    return Ready(str(venv.python))


def _last_line(text: str) -> str:
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return lines[-1][:300] if lines else "no output"


def case_env() -> dict[str, str]:
    """Environment for a case: the repository importable, the redis-server binary known."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO_ROOT), env.get("PYTHONPATH")]))
    with contextlib.suppress(RuntimeError):
        env[REDIS_ENV] = redis_executable()
    env.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    env.setdefault("PYTHONWARNINGS", "ignore")
    return env


VERSIONS_SNIPPET = """
import importlib.metadata as md, json, sys
out = {"python": sys.version.split()[0]}
for name in sys.argv[1:]:
    try:
        out[name] = md.version(name)
    except md.PackageNotFoundError:
        out[name] = "not installed"
try:
    import zmq
    out["libzmq"] = zmq.zmq_version()
except ImportError:
    pass
print(json.dumps(out))
"""


def versions(python: str, dists: tuple[str, ...]) -> dict[str, str]:
    """Versions of ``dists`` (and python, libzmq) as seen by ``python``."""
    import json

    try:
        done = subprocess.run(
            [python, "-c", VERSIONS_SNIPPET, *dists],
            capture_output=True, text=True, timeout=60, env=case_env(),
        )  # fmt: skip
        return dict(json.loads(done.stdout))
    except (OSError, subprocess.SubprocessError, ValueError) as exc:
        return {"error": str(exc)}


def redis_version() -> str:
    try:
        out = subprocess.run(
            [redis_executable(), "--version"], capture_output=True, text=True, timeout=10
        ).stdout
    except (OSError, RuntimeError, subprocess.SubprocessError) as exc:
        return f"unavailable: {exc}"
    return out.split(" v=")[1].split()[0] if " v=" in out else out.strip()


def machine() -> dict[str, str]:
    cpu = platform.processor() or "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "cpu": cpu,
        "cores": str(os.cpu_count()),
        "memory": f"{psutil.virtual_memory().total / 2**30:.1f} GiB",
        "os": f"{platform.system()} {platform.release()}",
        "date": dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "load average at start (1, 5, 15 min)": load_average(),
    }


#: CPU busy (all cores, percent) over a quiet second above which a section's figures
#: carry a warning: something else was running on the machine.
BUSY_WARNING_PERCENT = 20.0


def busy_percent(sample_s: float = 1.0) -> float:
    """How busy the CPUs were (percent of all cores) over ``sample_s``, while the suite
    itself runs nothing: the load other work puts on the machine."""
    return float(psutil.cpu_percent(interval=sample_s))


#: Share of the CPU time the hypervisor took from this machine during a section
#: (``steal``) above which its figures carry a warning.
STEAL_WARNING_PERCENT = 5.0
#: How much slower than the pass's fastest section the speed probe may run during a
#: section (median against median) before its figures carry a warning.
SLOW_PROBE_FACTOR = 1.3
#: Seconds between two readings of the speed probe while a section runs.
PROBE_INTERVAL_S = 2.0


def speed_probe_ms(items: int = 20_000) -> float:
    """CPU milliseconds a fixed piece of Python takes (a few on this kind of machine).

    The same work always takes the same CPU time on a quiet machine; when other
    virtual machines on the same host compete for its caches and memory, it takes
    longer, and so does every figure of the suite, though the machine itself looks
    idle (its load average, its busy share and even the hypervisor's steal say
    nothing of that).
    """
    started = time.process_time()
    table: dict[int, str] = {}
    for i in range(items):
        table[i] = str(i)
    sum(len(text) for text in table.values())
    return (time.process_time() - started) * 1000.0


class SpeedSampler(Sampler):
    """Reads :func:`speed_probe_ms` every :data:`PROBE_INTERVAL_S` on a thread of its
    own while a section runs (the section's jobs are other processes; this one only
    waits for them), so a section of minutes is judged by all of its minutes: on a
    shared host the machine's speed changes from one second to the next. It costs
    about 0.3% of one core."""

    def __init__(self, interval_s: float = PROBE_INTERVAL_S) -> None:
        super().__init__(interval_s)
        self.readings: list[float] = []

    def sample(self) -> None:
        self.readings.append(speed_probe_ms())

    def summary(self) -> list[float]:
        """[median, fastest, slowest] of the readings, in ms."""
        ordered = sorted(self.readings)
        return [ordered[len(ordered) // 2], ordered[0], ordered[-1]]


def load_average() -> str:
    """The 1, 5 and 15 minute load averages: other work on the machine skews every figure."""
    return ", ".join(f"{x:.2f}" for x in os.getloadavg())
