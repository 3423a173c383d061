"""The README says what the code does: the shipped palm.yaml's services, the guide
``palm up`` prints, where mastr writes its chart, docker-compose's secret."""

from __future__ import annotations

import re
from pathlib import Path

import yaml

from palm.gateway.guide import guide
from palm.ops.config import load_deployment

ROOT = Path(__file__).resolve().parents[2]
README = (ROOT / "README.md").read_text()


def readme_service_list() -> dict[str, str]:
    """The bullets under "The shipped `palm.yaml` serves N services": name -> spec."""
    match = re.search(
        r"The shipped `palm\.yaml` serves (\w+) services[^\n]*\n\n((?:- .*\n)+)", README
    )
    assert match, "no service list in the README"
    services = dict(re.findall(r"^- `([^`]+)`: .*`([\w.]+:\w+)`\.$", match.group(2), re.MULTILINE))
    words = {"one": 1, "two": 2, "three": 3, "four": 4, "five": 5, "six": 6, "seven": 7}
    assert words.get(match.group(1)) == len(services), match.group(0)
    return services


def test_the_readme_lists_the_services_of_the_shipped_palm_yaml() -> None:
    config = load_deployment(ROOT / "palm.yaml")
    shipped = {
        name: service.server or service.worker or next(iter(service.functions.values()))
        for name, service in config.services.items()
    }
    assert readme_service_list() == shipped


def test_the_guide_has_one_command_per_line_and_no_stop_line() -> None:
    config = load_deployment(ROOT / "palm.yaml")
    text = guide(config, "http://127.0.0.1:8080", "palm_key")
    commands = [line.strip() for line in text.splitlines() if "curl " in line]
    assert len(commands) >= 6
    assert all(line.startswith("curl ") and line.count("curl ") == 1 for line in commands)
    assert "Stop with Ctrl-C" not in text  # palm up adds it, and not with --once


def test_mastr_writes_its_chart_beside_the_example_in_an_ignored_folder() -> None:
    from examples.mastr.__main__ import DEFAULT_CHART

    assert DEFAULT_CHART.parent == ROOT / "examples" / "mastr" / "output"
    assert "examples/mastr/output/" in (ROOT / ".gitignore").read_text().splitlines()


def test_docker_compose_has_no_default_cluster_secret() -> None:
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    secret = compose["x-palm"]["environment"]["PALM_SECRET"]
    assert secret.startswith("${PALM_SECRET:?"), secret


def test_the_styled_guide_keeps_every_line_and_colours_the_commands() -> None:
    from palm.gateway.guide import styled

    config = load_deployment(ROOT / "palm.yaml")
    text = guide(config, "http://127.0.0.1:8080", "palm_key")
    rich_text = styled(text)
    assert rich_text.plain == text  # nothing rewrapped, no markup read ('[1, 2, 3, 4]')
    curl_styles = {
        str(span.style)
        for span in rich_text.spans
        if rich_text.plain[span.start : span.end].strip().startswith("curl ")
    }
    assert curl_styles == {"cyan"}
