"""The package's shape: exports, the exception tree, and the layering of the house."""

from __future__ import annotations

import ast
import builtins
from pathlib import Path

import palm
from palm import errors

ROOT = Path(__file__).resolve().parents[2]
#: The services palm runs (``palm masters``, ``palm worker``, ``palm up``): the top of
#: the house, inside the package so an installed wheel adds no other top-level name.
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


def imports_of(paths: list[Path]) -> set[str]:
    """Top-level names imported by ``paths``; ``palm.X`` counts as ``palm.X``."""
    found: set[str] = set()
    for path in paths:
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            names: list[str] = []
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                names = [node.module]
            for name in names:
                parts = name.split(".")
                found.add(".".join(parts[:2]) if parts[0] == "palm" else parts[0])
    return found


def library_files() -> list[Path]:
    """palm's library: everything in palm/ but the services."""
    services = [ROOT / "palm" / service for service in SERVICES]
    return [
        path
        for path in (ROOT / "palm").rglob("*.py")
        if not any(path.is_relative_to(service) for service in services)
    ]


def test_the_library_imports_nothing_of_the_services() -> None:
    forbidden = {*(f"palm.{s}" for s in SERVICES), "examples", "benchmarks", "tests"}
    assert imports_of(library_files()) & forbidden == set()


def test_the_services_never_import_each_other() -> None:
    for service in SERVICES:
        others = {f"palm.{other}" for other in SERVICES if other != service}
        found = imports_of(list((ROOT / "palm" / service).rglob("*.py")))
        assert found & others == set(), service


def test_nothing_but_palm_is_a_top_level_package_of_the_distribution() -> None:
    import tomllib

    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert project["tool"]["setuptools"]["packages"]["find"]["include"] == ["palm*"]


#: Modules every layer may import, whatever its place: each imports nothing of palm
#: but palm.errors (checked below), so importing one pulls no layer in with it.
ANYWHERE = frozenset({"palm.ops.processes", "palm.ops.ports"})


def palm_modules_imported(path: Path) -> set[str]:
    """The dotted names of the palm modules (and their members) ``path`` imports."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.update(f"{node.module}.{alias.name}" for alias in node.names)
    return {name for name in found if name.startswith("palm.")}


def importable_anywhere(name: str) -> bool:
    parts = name.split(".")
    return any(".".join(parts[:n]) in ANYWHERE for n in range(2, len(parts) + 1))


def palm_imports_of(subpackage: str) -> set[str]:
    """The palm subpackages (``wire``, ``serve``, ...) that ``palm/<subpackage>`` imports.

    Imports of the modules in :data:`ANYWHERE` are left out.
    """
    found: set[str] = set()
    for path in (ROOT / "palm" / subpackage).rglob("*.py"):
        for name in palm_modules_imported(path):
            if not importable_anywhere(name):
                found.add(name.split(".")[1])
    return found


#: What each layer of palm may import, bottom up; the faces at the top may import them all.
LAYERS = {
    "wire": {"errors", "wire"},
    "state": {"errors", "state"},
    "serve": {"errors", "wire", "state", "serve"},
    "call": {"errors", "wire", "state", "call"},
    "testing": {"errors", "wire", "state", "serve", "call", "testing"},
    "ops": {"errors", "wire", "state", "serve", "call", "ops"},
}


def test_each_layer_imports_only_the_layers_below_it() -> None:
    for layer, allowed in LAYERS.items():
        if (ROOT / "palm" / layer).exists():
            extra = palm_imports_of(layer) - allowed - {"__version__"}
            assert extra == set(), f"palm.{layer} imports palm.{sorted(extra)}"


def test_the_modules_importable_anywhere_import_only_the_errors() -> None:
    for module in ANYWHERE:
        path = ROOT.joinpath(*module.split(".")).with_suffix(".py")
        imported = {name.split(".")[1] for name in palm_modules_imported(path)}
        assert imported <= {"errors"}, f"{module} imports palm.{sorted(imported - {'errors'})}"


def test_clients_and_servers_never_import_each_other() -> None:
    assert "call" not in palm_imports_of("serve")
    assert "serve" not in palm_imports_of("call")
