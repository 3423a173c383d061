"""What a shipped function needs: its dependency spec, found and checked.

:func:`discover` walks a function the way cloudpickle will: the modules its
code imports (``IMPORT_NAME`` in its bytecode and in every nested code
object), the module-valued globals it names, and the functions and classes
reachable from its globals, closures and defaults (recursively, within this
process). Each module's top-level name is mapped to the installed
distribution that provides it (:func:`importlib.metadata.packages_distributions`)
and that distribution's version: that is the :class:`Spec`, with a hash.

Modules that no distribution provides and that are not the standard library
(the user's script, a local package) are *local*: cloudpickle ships their
functions and classes by value, so a worker needs no copy of the file.

A worker checks a spec against its own environment with :func:`check`: the
first package missing or at another version is a :class:`Problem`, which
travels back to the client as :class:`palm.errors.DependencyError`.
"""

from __future__ import annotations

import dis
import functools
import hashlib
import itertools
import json
import os
import socket
import sys
import types
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from importlib import metadata
from typing import Any

from palm.errors import ConfigError

__all__ = [
    "FRAMEWORK",
    "Problem",
    "Spec",
    "check",
    "discover",
    "installed_version",
    "local_modules",
    "pack",
    "this_host",
    "unpack",
]

#: Distributions every palm worker has by definition (palm-zmq provides palm): never put in a spec.
FRAMEWORK = frozenset({"palm-zmq", "palm"})

#: Top-level modules never shipped by value: the script (cloudpickle ships it by
#: value already) and palm's own packages, which every worker runs.
_NEVER_LOCAL = frozenset({"__main__", "palm"})

_MAX_OBJECTS = 2000  # a bound on the walk through globals, for huge module graphs
_MAX_FANOUT = 200  # and on what one object adds to it (a huge dict global)


@dataclass(frozen=True)
class Spec:
    """The distributions a function needs, pinned to the client's versions.

    ``packages`` maps distribution names to versions; ``local`` names the
    modules shipped by value (for the record: a worker needs nothing for them);
    ``unknown`` the imported modules found neither installed nor imported here
    (a worker is not asked for them: shown by ``palm deps``, never shipped).
    """

    packages: dict[str, str] = field(default_factory=dict)
    local: tuple[str, ...] = ()
    python: str = field(default_factory=lambda: "{}.{}".format(*sys.version_info[:2]))
    unknown: tuple[str, ...] = field(default=(), compare=False)

    def to_json(self) -> bytes:
        """Canonical JSON (sorted keys): equal specs give equal bytes."""
        data = {"packages": self.packages, "local": list(self.local), "python": self.python}
        return json.dumps(data, sort_keys=True, separators=(",", ":")).encode()

    @classmethod
    def from_json(cls, data: bytes) -> Spec:
        """A spec from :meth:`to_json`; :class:`ConfigError` for anything else."""
        try:
            raw = json.loads(data)
            packages = raw["packages"]
            local = raw.get("local", [])
            python = raw.get("python", "")
        except (ValueError, TypeError, KeyError) as exc:
            raise ConfigError(f"not a dependency spec: {exc}") from exc
        if not (
            isinstance(packages, dict)
            and all(isinstance(k, str) and isinstance(v, str) for k, v in packages.items())
            and isinstance(local, list)
            and all(isinstance(m, str) for m in local)
            and isinstance(python, str)
        ):
            raise ConfigError("a dependency spec has fields of the wrong type")
        return cls(dict(packages), tuple(local), python)

    @property
    def hash(self) -> str:
        """A short hash of the packages (what an environment is built for)."""
        pins = json.dumps(sorted(self.packages.items())).encode()
        return hashlib.sha256(pins + self.python.encode()).hexdigest()[:16]

    def requirements(self) -> list[str]:
        """``name==version`` lines, as an installer takes them."""
        return [f"{name}=={version}" for name, version in sorted(self.packages.items())]

    def describe(self) -> str:
        """Human text: one requirement a line, then the local modules."""
        lines = [f"# spec {self.hash} (python {self.python})", *self.requirements()]
        lines += [f"# shipped by value: {name}" for name in self.local]
        lines += [f"# imported but not found here: {name}" for name in self.unknown]
        return "\n".join(lines)


@dataclass(frozen=True)
class Problem:
    """Why a worker cannot run a spec: one package missing or at another version."""

    package: str
    wanted: str
    found: str | None


# discovery -----------------------------------------------------------------------


def discover(fn: Callable[..., Any]) -> Spec:
    """The :class:`Spec` of ``fn``: the distributions it imports, and its local modules."""
    modules = set(_modules_of(fn))
    owners = _distributions()
    packages: dict[str, str] = {}
    local: set[str] = set()
    unknown: set[str] = set()
    for name in modules:
        top = name.split(".")[0]
        if top in sys.stdlib_module_names or top in sys.builtin_module_names:
            continue
        dists = owners.get(top)
        if dists:
            for dist in dists:
                if dist.lower() in FRAMEWORK:
                    continue
                version = installed_version(dist)
                if version is not None:
                    packages[dist] = version
        elif top not in _NEVER_LOCAL and _is_source_module(top):
            local.add(top)
        elif top not in sys.modules:
            unknown.add(top)
    return Spec(packages, tuple(sorted(local)), unknown=tuple(sorted(unknown)))


def local_modules(spec: Spec) -> list[types.ModuleType]:
    """The imported modules of ``spec.local`` (to register for pickling by value)."""
    return [sys.modules[name] for name in spec.local if name in sys.modules]


def _is_source_module(top: str) -> bool:
    module = sys.modules.get(top)
    path = getattr(module, "__file__", None) or ""
    return module is not None and (path.endswith(".py") or hasattr(module, "__path__"))


def _modules_of(root: object) -> Iterator[str]:
    """Every module name ``root`` reaches (it may repeat names)."""
    seen: set[int] = set()
    todo: list[object] = [root]
    while todo and len(seen) < _MAX_OBJECTS:
        obj = todo.pop()
        if id(obj) in seen:
            continue
        seen.add(id(obj))
        try:
            names, more = _step(obj)
        except Exception:  # an exotic object (a proxy, a lazy module): nothing to learn
            continue
        yield from names
        todo += more[:_MAX_FANOUT]


def _step(obj: object) -> tuple[list[str], list[object]]:
    """The module names ``obj`` itself names, and the objects to look at next."""
    if isinstance(obj, types.ModuleType):
        return [obj.__name__], []
    if isinstance(obj, functools.partial):
        return [], [obj.func, *obj.args, *obj.keywords.values()]
    if isinstance(obj, types.MethodType):
        return [], [obj.__func__, obj.__self__]
    module = getattr(obj, "__module__", None)
    names = [module] if isinstance(module, str) else []
    if isinstance(obj, types.FunctionType):
        if _by_reference(obj):
            return names, []  # pickled by reference: its module is all the worker needs
        names += _imports_in(obj.__code__)
        more = [obj.__globals__[n] for n in _names_in(obj.__code__) if n in obj.__globals__]
        more += [cell.cell_contents for cell in obj.__closure__ or () if _filled(cell)]
        more += list(obj.__defaults__ or ()) + list((obj.__kwdefaults__ or {}).values())
        return names, more
    if isinstance(obj, type):
        if _by_reference(obj):
            return names, []
        more = [v for v in vars(obj).values() if callable(v) or isinstance(v, type)]
        return names, more + [b for b in obj.__bases__ if b is not object]
    if isinstance(obj, (list, tuple, set, frozenset)):
        return names, list(itertools.islice(obj, _MAX_FANOUT))
    if isinstance(obj, dict):
        return names, list(itertools.islice(obj.values(), _MAX_FANOUT))
    if isinstance(obj, (str, bytes, int, float, complex, bool, type(None))):
        return names, []
    # an instance: its class (and what that imports), and its attributes
    attributes = getattr(obj, "__dict__", None)
    found: list[object] = [type(obj)]
    if isinstance(attributes, dict):
        found += list(itertools.islice(attributes.values(), _MAX_FANOUT))
    return names, found


def _by_reference(obj: Any) -> bool:
    """Whether cloudpickle pickles ``obj`` by reference (an importable module's global)."""
    module = getattr(obj, "__module__", None)
    if module in (None, "__main__") or module not in sys.modules:
        return False
    top = module.split(".")[0]
    if top in _distributions() or top in sys.stdlib_module_names:
        # an installed package's function: the package (already named) is enough
        return getattr(sys.modules[module], obj.__name__, None) is obj
    return False


def _filled(cell: types.CellType) -> bool:
    try:
        cell.cell_contents  # noqa: B018
    except ValueError:
        return False
    return True


@functools.lru_cache(maxsize=1024)
def _imports_in(code: types.CodeType) -> tuple[str, ...]:
    """The modules ``code`` imports (code objects are immutable: kept, not walked per map)."""
    return tuple(_imports_iter(code))


def _imports_iter(code: types.CodeType) -> Iterator[str]:
    for instr in dis.get_instructions(code):
        if instr.opname == "IMPORT_NAME" and isinstance(instr.argval, str):
            yield instr.argval
    for const in code.co_consts:
        if isinstance(const, types.CodeType):
            yield from _imports_iter(const)


@functools.lru_cache(maxsize=1024)
def _names_in(code: types.CodeType) -> frozenset[str]:
    names = set(code.co_names)
    for const in code.co_consts:
        if isinstance(const, types.CodeType):
            names |= _names_in(const)
    return frozenset(names)


_owners: tuple[tuple[str, ...], dict[str, list[str]]] | None = None


def _distributions() -> dict[str, list[str]]:
    """Top-level module name -> distributions, recomputed when ``sys.path`` changes."""
    global _owners
    key = tuple(sys.path)
    if _owners is None or _owners[0] != key:
        _owners = (key, dict(metadata.packages_distributions()))
        installed_version.cache_clear()
    return _owners[1]


# checking --------------------------------------------------------------------------


@functools.lru_cache(maxsize=1024)
def installed_version(distribution: str) -> str | None:
    """The version of ``distribution`` installed here, or None."""
    try:
        return metadata.version(distribution)
    except metadata.PackageNotFoundError:
        return None


def check(spec: Spec) -> Problem | None:
    """The first package of ``spec`` this environment lacks or has at another version.

    The Python version (major.minor) comes first: cloudpickle's bytes are for one.
    """
    here = "{}.{}".format(*sys.version_info[:2])
    if spec.python and spec.python != here:
        return Problem("python", spec.python, here)
    for name, wanted in sorted(spec.packages.items()):
        found = installed_version(name)
        if found != wanted:
            return Problem(name, wanted, found)
    return None


@functools.lru_cache(maxsize=1)
def this_host() -> str:
    """This machine's host name, as a dependency error names it."""
    return socket.gethostname()


# the function section of a chunk ---------------------------------------------------


def pack(fn: Callable[..., Any]) -> tuple[Spec, bytes]:
    """``fn``'s spec and its shipped form: ``len(spec) | spec JSON | cloudpickle``.

    ``PALM_CHECK_DEPS=0`` ships an empty list of packages (workers check
    nothing). The modules of ``spec.local`` are pickled by value (registered with
    cloudpickle for this one call); a function whose local globals do not
    pickle by value (a lock, a socket) falls back to pickling by reference.
    """
    import cloudpickle

    spec = discover(fn)
    if os.environ.get("PALM_CHECK_DEPS", "1") == "0":  # ship no packages: nothing checked
        spec = Spec({}, spec.local, spec.python)
    registered = []
    for module in local_modules(spec):
        try:
            cloudpickle.register_pickle_by_value(module)
        except ValueError:
            continue  # already registered by the user: leave it so
        registered.append(module)
    try:
        data = cloudpickle.dumps(fn)
    except Exception:
        if not registered:
            raise
        for module in registered:
            cloudpickle.unregister_pickle_by_value(module)
        registered = []
        spec = Spec(spec.packages, (), spec.python)
        data = cloudpickle.dumps(fn)
    finally:
        for module in registered:
            cloudpickle.unregister_pickle_by_value(module)
    head = spec.to_json()
    return spec, len(head).to_bytes(4, "big") + head + data


def unpack(section: bytes) -> tuple[Spec, bytes]:
    """The spec and the pickled function of a :func:`pack` section (nothing unpickled)."""
    size = int.from_bytes(section[:4], "big")
    if len(section) < 4 + size:
        raise ConfigError("a shipped function's spec is cut short")
    return Spec.from_json(section[4 : 4 + size]), section[4 + size :]
