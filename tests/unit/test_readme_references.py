"""Every test the README names as the proof of a guarantee exists."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_every_test_the_readme_names_exists() -> None:
    text = (ROOT / "README.md").read_text()
    named = re.findall(r"`((?:unit|integration|e2e)/test_\w+\.py)((?:::\w+)?)`", text)
    named += [
        (prev, f"::{name}")
        for prev, name in re.findall(
            r"`((?:unit|integration|e2e)/test_\w+\.py)::\w+`, `::(\w+)`", text
        )
    ]
    assert len(named) >= 15
    for path, function in named:
        source = ROOT / "tests" / path
        assert source.exists(), path
        if function:
            assert f"def {function[2:]}(" in source.read_text(), f"{path}{function}"
