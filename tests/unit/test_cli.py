"""The ``palm`` command line imports the module of the command it runs, and only that."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

from palm.cli import build_parser, command_in

#: what the gateway, the dashboard and ``palm stats`` bring, and no master needs
HEAVY = ("flask", "werkzeug", "jinja2", "rich", "a2wsgi", "gunicorn", "uvicorn")


@pytest.mark.parametrize(
    ("argv", "command"),
    [
        (["master", "--name", "x"], "master"),
        (["--log-level", "WARNING", "worker", "m:W"], "worker"),
        (["--log-level=DEBUG", "up", "--check"], "up"),
        (["--help"], None),
        (["--version", "master"], None),
        ([], None),
    ],
)
def test_the_command_is_the_first_word_past_palms_own_options(
    argv: list[str], command: str | None
) -> None:
    assert command_in(argv) == command


def test_a_command_builds_a_parser_with_only_itself() -> None:
    sub = build_parser("master")._subparsers._group_actions[0]  # type: ignore[union-attr]
    assert set(sub.choices) == {"master"}


def test_no_command_or_an_unknown_one_lists_every_command() -> None:
    everything = {
        "demo", "deps", "health", "keys", "logs", "master", "serve", "stats",
        "masters", "up", "dashboard", "worker",
    }  # fmt: skip
    for name in (None, "nope", "apikeys"):
        sub = build_parser(name)._subparsers._group_actions[0]  # type: ignore[union-attr]
        assert set(sub.choices) == everything, name


@pytest.mark.parametrize("command", ["master", "worker", "serve", "masters"])
def test_the_processes_of_a_cluster_start_without_the_gateways_libraries(command: str) -> None:
    # in a fresh interpreter: parse the command's help (as its process would parse its
    # options), then print the top-level packages loaded by then
    probe = textwrap.dedent(f"""
        import contextlib, sys
        from palm.cli import build_parser
        with contextlib.redirect_stdout(sys.stderr), contextlib.suppress(SystemExit):
            build_parser({command!r}).parse_args([{command!r}, "--help"])
        print(" ".join(sorted({{name.split(".")[0] for name in sys.modules}})))
    """)
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert "usage: palm " + command in done.stderr  # the help was printed: the parser ran
    loaded = set(done.stdout.split())
    assert "palm" in loaded
    assert not loaded & set(HEAVY), (command, loaded & set(HEAVY))


def test_palm_dashboard_and_palm_up_are_commands_of_their_own() -> None:
    for command in ("dashboard", "up"):
        done = subprocess.run(
            [sys.executable, "-m", "palm", command, "--help"],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert done.returncode == 0, done.stderr
        assert done.stdout.startswith(f"usage: palm {command}")
