"""Every snippet of the README's topology sections runs, on free ports, in its own process,
and checks its results: each has an ``assert`` outside any loop, and every such
``assert`` is seen to run."""

from __future__ import annotations

import ast
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.fixtures.procs import Processes, free_port

ROOT = Path(__file__).resolve().parents[2]
DOC = ROOT / "README.md"
TOPOLOGIES = ["Standalone", "Parallel", "Chained", "Pipeline, hub and sink"]


def snippets() -> list[tuple[str, str]]:
    text = DOC.read_text()
    found: list[tuple[str, str]] = []
    title = ""
    for block in re.split(r"^(## .*)$", text, flags=re.M):
        if block.startswith("## "):
            title = block[3:].strip()
            continue
        if title not in TOPOLOGIES:
            continue
        for code in re.findall(r"```python\n(.*?)```", block, flags=re.S):
            found.append((title, code))
    return found


MARK = "palm-doc-checked"

# an assert under these may run zero times (or never: a function nobody calls)
_SKIPPABLE = (ast.For, ast.AsyncFor, ast.While, ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)


def checked(code: str) -> tuple[str, int]:
    """``code`` printing a mark after each assert outside any loop; how many there are."""
    tree = ast.parse(code)
    count = 0

    def visit(body: list[ast.stmt]) -> list[ast.stmt]:
        nonlocal count
        out: list[ast.stmt] = []
        for stmt in body:
            out.append(stmt)
            if isinstance(stmt, ast.Assert):
                out.extend(ast.parse(f"print({MARK!r}, {count}, flush=True)").body)
                count += 1
            elif not isinstance(stmt, _SKIPPABLE):
                for field in ("body", "orelse", "finalbody"):
                    inner = getattr(stmt, field, None)
                    if isinstance(inner, list) and inner and isinstance(inner[0], ast.stmt):
                        setattr(stmt, field, visit(inner))
        return out

    tree.body = visit(tree.body)
    return ast.unparse(ast.fix_missing_locations(tree)), count


@pytest.mark.parametrize(("title", "code"), snippets(), ids=lambda v: v[:12])
def test_every_snippet_asserts_its_results_outside_loops(title: str, code: str) -> None:
    _, count = checked(code)
    assert count >= 1, f"{title}: no assert outside a loop checks the snippet's results"


def test_the_check_ignores_asserts_inside_loops() -> None:
    assert checked("for x in []:\n    assert x\n")[1] == 0
    assert checked("with open('f') as f:\n    assert f\nassert 1\n")[1] == 2


def test_every_topology_has_a_snippet() -> None:
    titles = [title for title, _ in snippets()]
    assert sorted(set(titles), key=TOPOLOGIES.index) == TOPOLOGIES


#: Seconds a snippet may run before it prints every thread's stack and exits.
SNIPPET_TIMEOUT_S = 60

# Run before a snippet: an exception on any thread (a server that cannot bind,
# say) ends the process at once with its traceback, instead of leaving the
# client waiting for results that will never come; a snippet that hangs prints
# where each thread is before it is stopped.
PRELUDE = f"""\
import faulthandler as _fh, os as _os, sys as _sys, threading as _th, traceback as _tb
_fh.dump_traceback_later({SNIPPET_TIMEOUT_S}, exit=True)
def _fail_fast(args):
    _tb.print_exception(args.exc_type, args.exc_value, args.exc_traceback)
    _sys.stdout.flush()
    _sys.stderr.flush()
    _os._exit(3)
_th.excepthook = _fail_fast
"""


def test_the_prelude_ends_a_snippet_whose_thread_fails(procs: Processes, tmp_path: Path) -> None:
    script = tmp_path / "snippet.py"
    code = "import threading, time\n"
    code += "def boom():\n    raise OSError('cannot bind')\n"
    code += "threading.Thread(target=boom).start()\ntime.sleep(30)\n"
    script.write_text(PRELUDE + code)
    proc = procs.start([sys.executable, str(script)], stderr=subprocess.STDOUT)
    out, _ = proc.communicate(timeout=20)
    assert proc.returncode == 3
    assert "OSError: cannot bind" in out


@pytest.mark.timeout(SNIPPET_TIMEOUT_S + 30)
@pytest.mark.parametrize(("title", "code"), snippets(), ids=lambda v: v[:12])
def test_snippet_runs(procs: Processes, tmp_path: Path, title: str, code: str) -> None:
    # one pass, so a fresh port can never be mistaken for a later fixed one
    fresh = {p: str(free_port()) for p in set(re.findall(r"127\.0\.0\.1:(\d+)", code))}
    code = re.sub(r"127\.0\.0\.1:(\d+)", lambda m: f"127.0.0.1:{fresh[m.group(1)]}", code)
    code, count = checked(code)
    assert "__future__" not in code, "the prelude goes first: no __future__ import"
    script = tmp_path / "snippet.py"
    script.write_text(PRELUDE + code)
    proc = procs.start([sys.executable, str(script)], stderr=subprocess.STDOUT)
    out, _ = proc.communicate(timeout=SNIPPET_TIMEOUT_S + 20)
    assert proc.returncode == 0, f"{title}: exit {proc.returncode}\n{out}"
    ran = {int(line.split()[1]) for line in out.splitlines() if line.startswith(MARK + " ")}
    assert ran == set(range(count)), f"{title}: asserts that did not run: {set(range(count)) - ran}"
