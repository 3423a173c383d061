"""Tag-ready versioning: one version, read by the wheel, the CLI and the changelog."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import palm
from palm.cli import build_parser

ROOT = Path(__file__).resolve().parents[2]
#: a release heading of CHANGELOG.md: ``## [X.Y.Z] - YYYY-MM-DD``
RELEASE = re.compile(r"^## \[(\d+\.\d+\.\d+)\] - (\d{4}-\d{2}-\d{2})$", re.MULTILINE)


def test_the_version_is_semantic_and_lives_in_one_place() -> None:
    assert re.fullmatch(r"\d+\.\d+\.\d+", palm.__version__)
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert "version" not in project["project"]
    assert project["project"]["dynamic"] == ["version"]
    assert project["tool"]["setuptools"]["dynamic"]["version"] == {"attr": "palm.__version__"}


def test_the_newest_release_in_the_changelog_is_the_version() -> None:
    text = (ROOT / "CHANGELOG.md").read_text()
    assert "## [Unreleased]" in text
    releases = RELEASE.findall(text)
    assert releases, "no release heading in CHANGELOG.md"
    assert releases[0][0] == palm.__version__


def test_the_distribution_name_is_not_the_taken_one() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert project["project"]["name"] == "palm-zmq"
    assert project["project"]["scripts"] == {"palm": "palm.cli:main"}


def test_palm_version_prints_it(capsys) -> None:  # type: ignore[no-untyped-def]
    try:
        build_parser().parse_args(["--version"])
    except SystemExit:
        pass
    assert capsys.readouterr().out.strip() == f"palm {palm.__version__}"


def test_commands_listed_twice_by_an_old_and_a_new_distribution_register_once(
    monkeypatch,  # type: ignore[no-untyped-def]
) -> None:
    from importlib.metadata import entry_points

    from palm import cli

    listed = list(entry_points(group="palm.commands"))
    monkeypatch.setattr(cli, "entry_points", lambda group: listed + listed)
    parser = cli.build_parser()
    assert parser.parse_args(["up", "--check"]).check is True
