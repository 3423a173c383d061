"""Interpreters for the cases, the peers' virtual environments, versions and machine facts.

palm and the standard-library baselines run in the interpreter that runs the suite.
The peers live in ``.peers-venv/`` and pylm 0.14.4 in ``.pylm-venv/`` (at the repository
root), created and filled with pip on first use; they never become palm dependencies.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import multiprocessing
import multiprocessing.connection
import os
import platform
import statistics
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


#: How much longer the speed probe may take on each core when both cores run it at once
#: than when each runs it alone before a reading of :func:`cores_together` says that the
#: two cores shared one.
SHARED_CORES_FACTOR = 1.3
#: The share of those readings, before or after a section, from which its figures carry a
#: warning (one reading in ten may be a timer's interruption).
SHARED_WARNING_SHARE = 0.2
#: Readings of :func:`cores_together` before and after each section.
TOGETHER_READINGS = 10


def _probe_on(
    cpu: int,
    conn: multiprocessing.connection.Connection,
    others: list[multiprocessing.connection.Connection],
) -> None:
    """A helper of :func:`cores_together`: pinned to ``cpu``, it runs the speed probe
    each time it is asked and sends back its CPU time, until it is sent ``False`` or
    its parent is gone (the pipe's other end closed, as by a SIGKILL). It closes
    ``others``, the pipe ends it inherited and does not use: held open here, they
    would keep this pipe, or the other helper's, from ever reading as closed."""
    for other in others:
        other.close()
    os.sched_setaffinity(0, {cpu})
    speed_probe_ms()  # the first run in a new process allocates its memory
    try:
        while conn.recv():
            conn.send(speed_probe_ms())
    except (EOFError, OSError):
        return


def together_ratio(alone: tuple[float, float], together: tuple[float, float]) -> float:
    """How much longer the probe took on each core when both ran it at once (mean of
    the two cores): 1.0 means two full cores, 2.0 two that share one."""
    return sum(t / a for a, t in zip(alone, together, strict=True)) / len(alone)


def together_summary(ratios: list[float]) -> dict[str, float]:
    """Median, lowest and highest of :func:`together_ratio` readings, and the share of
    them (0 to 1) over :data:`SHARED_CORES_FACTOR`: the cores shared one."""
    ordered = sorted(ratios)
    return {
        "median": statistics.median(ordered),
        "low": ordered[0],
        "high": ordered[-1],
        "shared": sum(r > SHARED_CORES_FACTOR for r in ordered) / len(ordered),
    }


def cores_together(readings: int = TOGETHER_READINGS) -> dict[str, float] | None:
    """:func:`together_summary` of ``readings`` readings: the speed probe on each of
    two cores alone, then on both at once, from two helper processes pinned one to
    each core. None on a machine with fewer than two cores for us.

    A virtual machine's two cores may be two hardware threads of one physical core,
    or share one with another machine's core, for a moment: then each of two
    processes runs at little more than half speed while both run, though each alone
    runs at full speed, the steal reads 0 and the machine looks idle. On this kind
    of machine that comes and goes within a second. Anything that needs both cores
    at once (palm's master and workers, two Pool workers) then loses against a loop
    on one core. The helpers are gone when this returns.
    """
    try:
        cpus = sorted(os.sched_getaffinity(0))[:2]
    except (AttributeError, OSError):
        return None
    if len(cpus) < 2:
        return None
    context = multiprocessing.get_context("fork")  # Linux, as sched_setaffinity; no re-import
    pipes = [context.Pipe() for _ in cpus]
    ends = [end for pipe in pipes for end in pipe]
    helpers = [
        context.Process(
            target=_probe_on,
            args=(cpu, child, [end for end in ends if end is not child]),
            daemon=True,
        )
        for cpu, (_parent, child) in zip(cpus, pipes, strict=True)
    ]
    for helper in helpers:
        helper.start()
    for _parent, child in pipes:
        child.close()  # the helpers hold them
    conns = [parent for parent, _child in pipes]
    ratios: list[float] = []
    try:
        for _ in range(readings):
            alone = []
            for conn in conns:
                conn.send(True)
                alone.append(conn.recv())
            for conn in conns:
                conn.send(True)
            together = [conn.recv() for conn in conns]
            ratios.append(together_ratio((alone[0], alone[1]), (together[0], together[1])))
    finally:
        for conn, helper in zip(conns, helpers, strict=True):
            with contextlib.suppress(OSError):
                conn.send(False)
            helper.join(5.0)
            if helper.is_alive():
                helper.kill()
                helper.join()
    return together_summary(ratios)


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
