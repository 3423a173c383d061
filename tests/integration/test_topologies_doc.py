"""Every snippet of the README's topology sections runs, on free ports, in its own process."""

from __future__ import annotations

import re
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


def test_every_topology_has_a_snippet() -> None:
    titles = [title for title, _ in snippets()]
    assert sorted(set(titles), key=TOPOLOGIES.index) == TOPOLOGIES


@pytest.mark.timeout(90)
@pytest.mark.parametrize(("title", "code"), snippets(), ids=lambda v: v[:12])
def test_snippet_runs(procs: Processes, tmp_path: Path, title: str, code: str) -> None:
    # one pass, so a fresh port can never be mistaken for a later fixed one
    fresh = {p: str(free_port()) for p in set(re.findall(r"127\.0\.0\.1:(\d+)", code))}
    code = re.sub(r"127\.0\.0\.1:(\d+)", lambda m: f"127.0.0.1:{fresh[m.group(1)]}", code)
    script = tmp_path / "snippet.py"
    script.write_text(code)
    proc = procs.start([sys.executable, str(script)])
    out, _ = proc.communicate(timeout=60)
    assert proc.returncode == 0, f"{title}: exit {proc.returncode}\n{out}"
