"""The package's shape: exports, the exception tree, and the layering of the house."""

from __future__ import annotations

import ast
import builtins
from pathlib import Path

import palm
from palm import errors

ROOT = Path(__file__).resolve().parents[2]
SERVICES = ("masters", "workers", "gateway")


def test_all_names_exist_and_errors_share_one_root() -> None:
    for name in palm.__all__:
        assert hasattr(palm, name), name
    for name in errors.__all__:
        obj = getattr(errors, name)
        if isinstance(obj, type):
            assert issubclass(obj, errors.PalmError)
    assert issubclass(errors.TimeoutError, builtins.TimeoutError)
    assert issubclass(errors.UnknownFunction, errors.RemoteError)


def imports_of(package: str) -> set[str]:
    found: set[str] = set()
    for path in (ROOT / package).rglob("*.py"):
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                found.update(alias.name.split(".")[0] for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                found.add(node.module.split(".")[0])
    return found


def test_palm_imports_nothing_of_the_services() -> None:
    assert imports_of("palm") & {*SERVICES, "examples", "benchmarks", "tests"} == set()


def test_the_services_never_import_each_other() -> None:
    for service in SERVICES:
        if (ROOT / service).exists():
            others = set(SERVICES) - {service}
            assert imports_of(service) & others == set(), service
