"""``palm up`` refuses what would go wrong, fast and saying why: a class path that does
not import (found by the check, before anything starts), a worker whose ``__init__``
raises (its pool gives up), every problem of a file at once."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from tests.fixtures.procs import Processes

pytestmark = pytest.mark.timeout(120)

PALM = [sys.executable, "-m", "palm", "--log-level", "WARNING"]
#: what the issue allows: palm up gives up within this, never hangs
LIMIT_S = 30.0

APP = """\
from palm.serve.worker import Worker


class Boom(Worker):
    def __init__(self, *args, **kwargs):
        raise RuntimeError("boom in __init__ of Boom")

    def foo(self, message):
        return message


class Fine(Worker):
    def foo(self, message):
        return message
"""


def run_up(procs: Processes, tmp_path: Path, services: str, *extra: str) -> tuple[int, str, float]:
    """``palm up --once`` on a file of ``services`` next to :data:`APP`: its exit
    status, its output (stdout and stderr, in order) and how long it took."""
    (tmp_path / "app.py").write_text(APP)
    (tmp_path / "palm.yaml").write_text(
        "name: refuses\nedge: {port: 0, auth: open}\nservices:\n"
        + textwrap.indent(textwrap.dedent(services), "  ")
    )
    started = time.monotonic()
    proc = procs.start([*PALM, "up", "--once", *extra], stderr=subprocess.STDOUT, cwd=tmp_path)
    try:
        out, _ = proc.communicate(timeout=LIMIT_S + 30)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, _ = proc.communicate()
        raise AssertionError(f"palm up still running after {LIMIT_S + 30} s:\n{out}") from None
    return proc.returncode, out, time.monotonic() - started


def last_lines(out: str, count: int = 20) -> str:
    return "\n".join(out.strip().splitlines()[-count:])


def test_a_typo_in_a_class_path_is_refused_before_anything_starts(procs, tmp_path):
    code, out, took_s = run_up(
        procs,
        tmp_path,
        """\
        good: {kind: parallel, worker: "app:Fine", workers: 1}
        typo: {kind: parallel, worker: "app:Fien", workers: 1}
        module: {kind: function, functions: {f: "apps:double"}, workers: 1}
        """,
    )
    assert code != 0 and took_s < LIMIT_S, (code, took_s, out)
    tail = last_lines(out)
    assert "services.typo.worker: 'app' has no 'Fien'" in tail, out
    assert "services.module.functions.f: cannot import 'apps'" in tail, out
    assert "2 problems" in tail, out
    assert "edge at" not in out  # nothing was started


def test_check_reports_every_problem_of_the_file_at_once(procs, tmp_path):
    code, out, _took_s = run_up(
        procs,
        tmp_path,
        """\
        a: {kind: parallel, worker: "app:Fine", workers: two}
        b: {kind: standalone, colour: blue}
        """,
        "--check",
    )
    assert code == 1, out
    for line in (
        "services.a.workers: Input should be a valid integer, not 'two'",
        "services.b.colour: unknown key",
        "services.b: a standalone service needs 'server'",
    ):
        assert line in out, out


def test_check_passes_a_good_file_and_starts_nothing(procs, tmp_path):
    code, out, _took_s = run_up(
        procs, tmp_path, 'ok: {kind: parallel, worker: "app:Fine", workers: 1}\n', "--check"
    )
    assert code == 0 and "is fine: 1 services" in out and "edge at" not in out, out


def test_a_worker_raising_in_init_makes_palm_up_exit_with_the_error(procs, tmp_path):
    code, out, took_s = run_up(
        procs,
        tmp_path,
        """\
        fine: {kind: parallel, worker: "app:Fine", workers: 1}
        boom: {kind: parallel, worker: "app:Boom", workers: 2}
        """,
    )
    assert code != 0 and took_s < LIMIT_S, (code, took_s, out)
    tail = last_lines(out)
    assert "workers:boom" in tail and "exited with 3" in tail, out
    assert "failed at start 2 times in a row" in tail, out
    assert "RuntimeError: boom in __init__ of Boom" in tail, out
    assert "palm up: stopped" in tail, out
