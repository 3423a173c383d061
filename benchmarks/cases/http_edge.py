"""HTTP through the edge: the real ``palm up`` (Envoy -> gateway -> master -> worker)
against Envoy -> a trivial gunicorn app, at 10 and 64 connections.

The palm stack is ``palm up --config benchmarks/cases/http_palm.yaml``: what
``make up`` starts (embedded Redis, the masters, a worker pool, the gateway
under gunicorn with palm's worker class, Envoy), with palm.yaml's edge as
shipped (API keys on: wrk sends the key ``palm up`` made) and a rate limit far
above what the machine serves. Two references: the trivial app under gunicorn
with 2 sync workers (gunicorn's default worker class, the one shared/ANCHORS.md
measured), and the stronger one, the same trivial app (as ASGI) under gunicorn
with 2 workers of palm's own gateway worker class (uvicorn's event loop), each
behind an Envoy with ``--concurrency 2`` and the same rate limit (``palm up``'s own
Envoy runs one worker thread, as it ships; with two it served the same within the
noise on this 2-core machine, at the same CPU per request). The stacks
are up at once and ``wrk`` drives them in turn, run by run, so a slow spell of
the machine falls on all of them alike; each run lasts ``--duration-s`` and
reports req/s, the p99 latency and the share of the machine's CPU time that went
idle meanwhile (all cores, from :func:`psutil.cpu_times`). Non-2xx answers and socket errors are
counted and reported in the row's notes: a run with any is not a clean run.
"""

from __future__ import annotations

import argparse
import contextlib
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections.abc import Iterator
from contextlib import AbstractContextManager, ExitStack, contextmanager
from pathlib import Path

import psutil

from benchmarks.processes import free_port
from benchmarks.record import Row, emit
from benchmarks.timing import cpu_share

METHODS = {
    "palm": "palm up: Envoy -> gateway (1 uvicorn worker, API keys) -> master -> 1 worker",
    "gunicorn": "Envoy -> trivial gunicorn app (2 sync workers)",
    "uvicorn": "Envoy -> trivial ASGI app on gunicorn (2 uvicorn workers, palm's EdgeWorker)",
}
CONNECTIONS = (10, 64)
BODY = b"hello"
#: The unit of the rows that say how much of the machine's CPU time went idle while
#: ``wrk`` drove a stack (no ratio is drawn from them).
IDLE_UNIT = "% idle"
#: The figures of each stack and number of connections: (stat, unit, better).
STATS = (("rate", "req/s", "higher"), ("p99", "ms", "lower"), ("idle CPU", IDLE_UNIT, "lower"))
#: The note of a row whose runs had no errors and only 2xx answers.
CLEAN = "no errors, no non-2xx answers"


def placeholder_rows(status: str = "not measured") -> list[Row]:
    return [
        Row(bench="http", key=key, method=method, unit=unit, better=better, size=connections,
            params={"stat": stat}, status=status)
        for key, method in METHODS.items()
        for connections in CONNECTIONS
        for stat, unit, better in STATS
    ]  # fmt: skip


def _wait_http(url: str, timeout_s: float = 30.0) -> None:
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                if response.status == 200:
                    return
        except OSError:
            pass
        if time.monotonic() > deadline:
            raise TimeoutError(f"{url} did not answer within {timeout_s} s")
        time.sleep(0.05)


def _edge(stack: ExitStack, service: str, gateway: tuple[str, int]) -> str:
    from palm.gateway.envoy_config import EdgeConfig, RateLimit
    from palm.gateway.envoy_process import EnvoyProcess

    config = EdgeConfig(
        services={service: f"/{service}"},
        gateways=(gateway,),
        rate_limit=RateLimit(max_tokens=10**7, tokens_per_fill=10**7, fill_interval_s=1.0),
        access_log=None,
    )
    edge = EnvoyProcess(config, concurrency=2)
    stack.callback(edge.close)
    edge.start()
    return edge.url


#: The deployment file ``palm up`` runs for the palm rows.
DEPLOYMENT = Path(__file__).resolve().with_name("http_palm.yaml")


@contextmanager
def palm_stack() -> Iterator[tuple[str, dict[str, str]]]:
    """The real ``palm up`` on :data:`DEPLOYMENT`: embedded Redis, the masters, a worker
    pool, the gateway (gunicorn) and Envoy, as ``make up`` starts them; wrk sends the
    API key ``palm up`` made."""
    port = free_port()
    with ExitStack() as stack:
        up = subprocess.Popen(
            [sys.executable, "-m", "palm", "up", "--config", str(DEPLOYMENT), "--port", str(port)],
            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
        )  # fmt: skip
        stack.callback(_stop_tree, up)
        url, workdir = _read_up(up)
        key = (Path(workdir) / "api_key").read_text().strip()
        headers = {"Authorization": f"Bearer {key}"}
        _wait_http(f"{url}/healthz")
        yield f"{url}/demo/foo", headers


def _read_up(up: subprocess.Popen[str], timeout_s: float = 120.0) -> tuple[str, str]:
    """The edge's URL and the work directory ``palm up`` prints once everything answers."""
    assert up.stdout is not None
    found: dict[str, str] = {}
    deadline = time.monotonic() + timeout_s
    while "workdir" not in found:
        line = up.stdout.readline()  # palm up prints its summary at once, then waits
        if not line or time.monotonic() > deadline:
            raise RuntimeError(f"palm up exited or hung before it was ready ({up.poll()})")
        if line.startswith("palm up: edge at "):
            found["url"] = line.split(" at ", 1)[1].strip()
        elif line.strip().startswith("work directory: "):
            found["workdir"] = line.split(": ", 1)[1].strip()
    threading.Thread(target=up.stdout.read, daemon=True).start()  # drain the rest
    return found["url"], found["workdir"]


def _stop_tree(proc: subprocess.Popen[str]) -> None:
    """SIGTERM ``palm up`` (it stops its stack), then SIGKILL whatever is left of it."""
    import psutil

    try:
        tree = [psutil.Process(proc.pid), *psutil.Process(proc.pid).children(recursive=True)]
    except psutil.Error:
        tree = []
    proc.terminate()
    try:
        proc.wait(15)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
    for child in tree:
        with contextlib.suppress(psutil.Error):
            child.kill()


@contextmanager
def gunicorn_stack(*options: str, app_name: str = "app") -> Iterator[tuple[str, dict[str, str]]]:
    """The trivial app under gunicorn (2 sync workers unless ``options`` say) behind Envoy."""
    port = free_port()
    with ExitStack() as stack:
        app = subprocess.Popen(
            [sys.executable, "-m", "gunicorn", "--bind", f"127.0.0.1:{port}", "--workers", "2",
             *options, "--log-level", "warning", f"benchmarks.cases.http_app:{app_name}"],
            stdout=subprocess.DEVNULL,
        )  # fmt: skip
        stack.callback(_stop, app)
        _wait_http(f"http://127.0.0.1:{port}/healthz")
        url = _edge(stack, "trivial", ("127.0.0.1", port))
        _wait_http(f"{url}/healthz")
        yield f"{url}/trivial/json", {}


def uvicorn_stack() -> AbstractContextManager[tuple[str, dict[str, str]]]:
    """The trivial ASGI app under gunicorn with palm's gateway worker class, behind Envoy."""
    from palm.gateway.serve import EDGE_WORKER

    return gunicorn_stack("--worker-class", EDGE_WORKER, app_name="asgi_app")


STACKS = {"palm": palm_stack, "gunicorn": gunicorn_stack, "uvicorn": uvicorn_stack}


def _stop(proc: subprocess.Popen[bytes]) -> None:
    proc.terminate()
    try:
        proc.wait(10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def wrk_script(headers: dict[str, str]) -> str:
    """wrk's Lua script: POST the body with ``headers``."""
    lines = ['wrk.method = "POST"', f'wrk.body = "{BODY.decode()}"']
    lines += [f'wrk.headers["{name}"] = "{value}"' for name, value in headers.items()]
    return "\n".join(lines) + "\n"


_UNITS = {"us": 1e-3, "ms": 1.0, "s": 1e3}


def wrk(url: str, connections: int, duration_s: float, script: Path) -> tuple[float, float, str]:
    """req/s, p99 in ms, and a note of non-2xx answers or socket errors (empty if none)."""
    out = subprocess.run(
        ["wrk", "-t", "2", "-c", str(connections), "-d", f"{duration_s:g}s", "--latency",
         "-s", str(script), url],
        capture_output=True, text=True, timeout=duration_s + 60, check=True,
    ).stdout  # fmt: skip
    rate = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    p99 = re.search(r"99%\s+([\d.]+)(us|ms|s)\b", out)
    assert p99 is not None, out
    problems = [
        line.strip() for line in out.splitlines() if "Non-2xx" in line or "Socket errors" in line
    ]
    return rate, float(p99.group(1)) * _UNITS[p99.group(2)], "; ".join(problems)


def measure(runs: int, duration_s: float) -> list[Row]:
    if shutil.which("wrk") is None:
        return placeholder_rows("unavailable: wrk is not installed (apt-get install wrk)")
    rows: list[Row] = []
    with tempfile.TemporaryDirectory(prefix="palm-wrk-") as folder, ExitStack() as stacks:
        urls: dict[str, str] = {}
        scripts: dict[str, Path] = {}
        for key, stack in STACKS.items():
            try:
                urls[key], headers = stacks.enter_context(stack())
            except Exception as exc:  # a stack that does not come up is reported, not hidden
                reason = f"unavailable: {type(exc).__name__}: {exc}"
                rows += [r for r in placeholder_rows(reason) if r.key == key]
                continue
            scripts[key] = Path(folder) / f"{key}.lua"
            scripts[key].write_text(wrk_script(headers))
        for connections in CONNECTIONS:
            for key, url in urls.items():
                wrk(url, connections, 1.0, scripts[key])  # warm up
            rates: dict[str, list[float]] = {key: [] for key in urls}
            p99s: dict[str, list[float]] = {key: [] for key in urls}
            notes: dict[str, list[str]] = {key: [] for key in urls}
            idle: dict[str, list[float]] = {key: [] for key in urls}
            for _ in range(runs):
                for key, url in urls.items():  # in turn, run by run
                    before = psutil.cpu_times()
                    rate, p99, problems = wrk(url, connections, duration_s, scripts[key])
                    idle[key].append(cpu_share(before, psutil.cpu_times(), "idle"))
                    rates[key].append(rate)
                    p99s[key].append(p99)
                    if problems:
                        notes[key].append(problems)
            for key in urls:
                note = " | ".join(notes[key]) if notes[key] else CLEAN
                figures = (rates[key], p99s[key], idle[key])
                for (stat, unit, better), values in zip(STATS, figures, strict=True):
                    rows.append(
                        Row("http", key, METHODS[key], unit, better, connections,
                            {"stat": stat}, values, None, "ok", note)
                    )  # fmt: skip
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--duration-s", type=float, default=10.0)
    args = parser.parse_args()
    emit(measure(args.runs, args.duration_s))


if __name__ == "__main__":
    main()
