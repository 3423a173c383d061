"""examples/chatbox: the monolith against its palm port, in one run.

    python -m benchmarks.chatbox              # 1, 10 and 50 users, 6 s each
    python -m benchmarks.chatbox --seconds 2  # shorter

Each simulated user holds the dialog of tests/e2e/test_chatbox_stack.py (greeting,
"something funny with Bill Murray", "no preference", "PG", "no", "yes",
"bye") over and over on one connection for ``--seconds``, one turn at a time,
and every turn's latency is recorded. The monolith is
``examples.chatbox.monolith`` (a threaded socket server, state in its memory,
one JSON line per turn); palm is ``palm up`` of the chatbox service (Redis,
2 gateway processes behind Envoy with round robin, 2 function workers), one
HTTP keep-alive connection per user. Both run on this machine, with the load
generator (Python threads) beside them. Writes the table into
benchmarks/RESULTS.md between its chatbox markers (appended when missing).
"""

from __future__ import annotations

import argparse
import datetime as dt
import http.client
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import psutil

from benchmarks.processes import free_port
from palm.ops.cluster import read_lines

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
SCRIPT = ("", "something funny with Bill Murray", "no preference", "PG", "no", "yes", "bye")
LEVELS = (1, 10, 50)
BEGIN, END = "<!-- chatbox:begin -->", "<!-- chatbox:end -->"
CONFIG = """\
name: chatbox-bench
redis: null
host: 127.0.0.1
notes: ["redis at {redis}"]
edge: {port: 0, load_balancer: round_robin, gateway_workers: 2, auth: open,
       rate_limit: {max_tokens: 1000000, tokens_per_fill: 1000000, fill_interval_s: 1}}
services:
  chatbox:
    kind: function
    functions: {agent: "examples.chatbox.app:service1", listener: "examples.chatbox.app:service1"}
    workers: 2
    route: /chatbox
"""

Turn = Callable[[dict[str, str]], dict[str, object]]


def kill_tree(proc: subprocess.Popen[str]) -> None:
    tree = psutil.Process(proc.pid).children(recursive=True) if proc.poll() is None else []
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(60)
    except subprocess.TimeoutExpired:
        proc.kill()
    _gone, alive = psutil.wait_procs(tree, timeout=10)
    for child in alive:
        child.kill()


def env() -> dict[str, str]:
    return dict(
        os.environ, PYTHONPATH=os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])
    )


@contextmanager
def monolith() -> Iterator[Callable[[], Turn]]:
    port = free_port()
    code = (
        "from examples.chatbox.monolith import ThreadingServer; "
        "from examples.chatbox.dialog import initResources; "
        f"initResources(); ThreadingServer('127.0.0.1', {port}).listen()"
    )
    clean = {k: v for k, v in env().items() if k not in ("PALM_REDIS_URL", "CHATBOX_REDIS_URL")}
    proc = subprocess.Popen([sys.executable, "-c", code], env=clean, cwd=ROOT, text=True)
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                if time.monotonic() > deadline or proc.poll() is not None:
                    raise RuntimeError("the monolith did not start") from None
                time.sleep(0.1)

        def connect() -> Turn:
            sock = socket.create_connection(("127.0.0.1", port), timeout=60)
            lines = sock.makefile("rb")

            def turn(message: dict[str, str]) -> dict[str, object]:
                sock.sendall(json.dumps(message).encode() + b"\n")
                reply: dict[str, object] = json.loads(lines.readline())
                return reply

            return turn

        yield connect
    finally:
        proc.kill()
        proc.wait(10)


@contextmanager
def palm() -> Iterator[Callable[[], Turn]]:
    directory = Path(tempfile.mkdtemp(prefix="palm-chatbox-bench-"))
    (directory / "palm.yaml").write_text(CONFIG)
    cmd = [sys.executable, "-m", "palm", "--log-level", "WARNING", "up"]
    cmd += ["--config", str(directory / "palm.yaml"), "--port", "0"]
    proc = subprocess.Popen(cmd, env=env(), cwd=ROOT, text=True, stdout=subprocess.PIPE)
    try:
        lines = read_lines(proc, lambda line: line.startswith("redis at "), 120)
        url = next(line.split()[-1] for line in lines if line.startswith("palm up: edge at "))
        host, port = url.removeprefix("http://").split(":")

        def connect() -> Turn:
            conn = http.client.HTTPConnection(host, int(port), timeout=60)

            def turn(message: dict[str, str]) -> dict[str, object]:
                conn.request("POST", "/chatbox/agent", body=json.dumps(message).encode())
                response = conn.getresponse()
                body = response.read()
                if response.status != 200:
                    raise RuntimeError(f"{response.status} {body[:200]!r}")
                reply: dict[str, object] = json.loads(body)
                return reply

            return turn

        yield connect
    finally:
        kill_tree(proc)
        shutil.rmtree(directory, ignore_errors=True)


def user(connect: Callable[[], Turn], stop: float, out: list[float], errors: list[str]) -> None:
    turn = connect()
    while time.monotonic() < stop:
        session = "-1"
        for text in SCRIPT:
            message = {"text": text, "id": session, "turn": uuid.uuid4().hex}
            started = time.perf_counter()
            try:
                reply = turn(message)
            except Exception as exc:  # counted, and this user starts again
                errors.append(repr(exc))
                turn = connect()
                break
            out.append(time.perf_counter() - started)
            session = str(reply["userid"])


def level(connect: Callable[[], Turn], users: int, seconds: float) -> dict[str, float]:
    latencies: list[list[float]] = [[] for _ in range(users)]
    errors: list[str] = []
    stop = time.monotonic() + seconds
    threads = [
        threading.Thread(target=user, args=(connect, stop, latencies[i], errors))
        for i in range(users)
    ]
    started = time.monotonic()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    elapsed = time.monotonic() - started
    every = sorted(x for one in latencies for x in one)
    pick = lambda q: every[min(len(every) - 1, int(q * len(every)))] * 1000  # noqa: E731
    return {
        "users": users,
        "turns": len(every),
        "turns_per_s": len(every) / elapsed,
        "p50_ms": pick(0.50) if every else float("nan"),
        "p99_ms": pick(0.99) if every else float("nan"),
        "errors": len(errors),
    }


def table(rows: list[dict[str, object]], seconds: float) -> str:
    when = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
    load = os.getloadavg()[0]
    lines = [
        "## chatbox: dialog turns, monolith vs palm",
        "",
        f"Measured {when} by `python -m benchmarks.chatbox --seconds {seconds:g}` "
        f"({os.cpu_count()} cores, load average {load:.1f} at the end). Each user repeats "
        "the 7-turn dialog, one turn at a time; the monolith keeps state in its memory, "
        "palm in Redis behind Envoy, 2 gateway processes and 2 workers.",
        "",
        "| system | users | turns/s | p50 (ms) | p99 (ms) | turns | errors |",
        "|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        lines.append(
            f"| {row['system']} | {row['users']} | {row['turns_per_s']:,.0f} | "
            f"{row['p50_ms']:.1f} | {row['p99_ms']:.1f} | {row['turns']:,} | {row['errors']} |"
        )
    return "\n".join(lines) + "\n"


def write(section: str, path: Path = HERE / "RESULTS.md") -> None:
    block = f"{BEGIN}\n{section}{END}\n"
    text = path.read_text() if path.exists() else ""
    if BEGIN in text and END in text:
        text = re.sub(re.escape(BEGIN) + ".*?" + re.escape(END) + "\n?", block, text, flags=re.S)
    else:
        text = text.rstrip("\n") + "\n\n" + block
    path.write_text(text)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="chatbox: monolith vs palm")
    parser.add_argument("--seconds", type=float, default=6.0, help="per level")
    parser.add_argument("--no-write", action="store_true", help="print only")
    args = parser.parse_args(argv)
    rows: list[dict[str, object]] = []
    for system, start in (("monolith (threaded sockets)", monolith), ("palm (Envoy, Redis)", palm)):
        with start() as connect:
            level(connect, 2, 1.0)  # warm up
            for users in LEVELS:
                result = level(connect, users, args.seconds)
                rows.append({"system": system, **result})
                print(json.dumps(rows[-1]), flush=True)
    section = table(rows, args.seconds)
    print(section)
    if not args.no_write:
        write(section)


if __name__ == "__main__":
    main()
