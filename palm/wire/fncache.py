"""The shipped form of a function, kept while nothing it would pickle has changed.

``map`` ships its function as cloudpickle bytes behind a dependency spec
(:func:`palm.wire.deps.pack`). Pickling a function by value walks its code,
globals, closure and defaults in Python and costs tens to hundreds of
microseconds: for a short ``map`` that is a good part of the call. The bytes
depend only on what cloudpickle reads, so :class:`FunctionCache` keeps them per
function object together with a *snapshot* of those inputs and hands them out
again while a fresh snapshot equals the kept one.

A snapshot is exact or refused. It records, for the function and every
function it reaches by value: the code object, name, qualified name, module,
defaults, keyword defaults, annotations, attribute dict, closure cells and the
globals its code names (a name absent from the globals is recorded as absent,
so a later global shadowing a builtin is seen). A value is recorded when it is
immutable (``None``, booleans, numbers, strings, bytes, ranges, and tuples and
frozensets of those), by identity when it is a module, class or function that
cloudpickle pickles by reference (importable under its name from a module that
is not shipped by value), and walked when it is a function pickled by value.
Anything else (a list, a dict, an instance, a class shipped by value) could
change without the snapshot seeing it: such a function is not cached, and is
pickled afresh on every call as before.
"""

from __future__ import annotations

import functools
import os
import sys
import threading
import types
import weakref
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

import cloudpickle

__all__ = ["FunctionCache", "snapshot"]

_ATOMS = frozenset({type(None), bool, int, float, complex, str, bytes, range, type(Ellipsis)})
_ABSENT = object()  # a global the code names that the module does not define
_AGAIN = object()  # a function met before in the same walk (then its order)
_MAX_PARTS = 2_000  # a function reaching more than this is pickled afresh each time

Snapshot = tuple[Any, ...]


class _Unstable(Exception):
    """A value the snapshot cannot vouch for."""


def snapshot(fn: Callable[..., Any], local: tuple[str, ...] = ()) -> Snapshot | None:
    """Everything cloudpickle reads from ``fn``, or None when some of it could change unseen.

    ``local``: the top-level modules shipped by value (the spec's ``local``);
    what they hold is walked, never taken by reference.
    """
    if not isinstance(fn, types.FunctionType):
        return None
    parts: list[Any] = []
    try:
        _Walk(parts, frozenset(local)).function(fn)
    except (_Unstable, RecursionError):
        return None
    except Exception:  # an object that fails to be looked at (a raising __repr__): no cache
        return None
    return tuple(parts)


def same(kept: Snapshot, fresh: Snapshot) -> bool:
    """Whether two snapshots record the same inputs (values equal, references identical)."""
    if len(kept) != len(fresh):
        return False
    for a, b in zip(kept, fresh, strict=True):
        if a is b:
            continue
        if type(a) is not type(b) or type(a) not in _ATOMS or a != b:
            return False
        if type(a) in (float, complex) and repr(a) != repr(b):  # 0.0 and -0.0 pickle apart
            return False
    return True


class _Walk:
    """One snapshot under construction: ``parts`` in a fixed order."""

    def __init__(self, parts: list[Any], local: frozenset[str]) -> None:
        self.parts = parts
        self.local = local
        self.walked: dict[int, int] = {}  # id of a function walked -> its order

    def add(self, value: Any) -> None:
        self.parts.append(value)
        if len(self.parts) > _MAX_PARTS:
            raise _Unstable

    def value(self, value: Any) -> None:
        kind = type(value)
        if kind in _ATOMS:
            self.add(value)
        elif kind is tuple or kind is frozenset:
            self.add(kind)
            self.add(len(value))
            for item in value if kind is tuple else sorted(value, key=repr):
                self.value(item)
        elif kind is types.ModuleType:
            if not self.by_reference_module(value):
                raise _Unstable
            self.add(value)
        elif kind is types.FunctionType:
            if self.by_reference(value):
                self.add(value)
            else:
                self.function(value)
        elif kind is types.BuiltinFunctionType or isinstance(value, type):
            if not self.by_reference(value):
                raise _Unstable
            self.add(value)
        else:
            raise _Unstable

    def function(self, fn: types.FunctionType) -> None:
        again = self.walked.get(id(fn))
        if again is not None:  # recursion, or a second reference: recorded in full already
            self.add(_AGAIN)
            self.add(again)
            return
        self.walked[id(fn)] = len(self.walked)
        code = fn.__code__
        self.add(code)  # (no reference to the function itself: the cache holds it weakly)
        for text in (fn.__name__, fn.__qualname__, fn.__module__):
            self.add(text)
        self.value(fn.__defaults__)
        self.mapping(fn.__kwdefaults__)
        self.mapping(fn.__annotations__)
        self.mapping(fn.__dict__)
        for cell in fn.__closure__ or ():
            try:
                contents = cell.cell_contents
            except ValueError:  # an empty cell
                contents = _ABSENT
            self.add(cell)
            if contents is _ABSENT:
                self.add(_ABSENT)
            else:
                self.value(contents)
        names = fn.__globals__
        for name in _names_in(code):
            found = names.get(name, _ABSENT)
            self.add(name)
            if found is _ABSENT:
                self.add(_ABSENT)
            else:
                self.value(found)

    def mapping(self, values: dict[str, Any] | None) -> None:
        if values is None:
            self.add(None)
            return
        if type(values) is not dict:
            raise _Unstable
        self.add(len(values))
        for key in sorted(values):
            if type(key) is not str:
                raise _Unstable
            self.add(key)
            self.value(values[key])

    def by_reference_module(self, module: types.ModuleType) -> bool:
        name = module.__name__
        return (
            name != "__main__"
            and sys.modules.get(name) is module
            and name.partition(".")[0] not in self.local
            and not _registered(name)
        )

    def by_reference(self, obj: Any) -> bool:
        """Whether cloudpickle pickles ``obj`` by its importable name."""
        module_name = getattr(obj, "__module__", None)
        qualname = getattr(obj, "__qualname__", None)
        if not isinstance(module_name, str) or not isinstance(qualname, str):
            return False
        module = sys.modules.get(module_name)
        if module is None or not self.by_reference_module(module) or "<locals>" in qualname:
            return False
        found: Any = module
        for part in qualname.split("."):
            found = getattr(found, part, _ABSENT)
            if found is _ABSENT:
                return False
        return found is obj


def _registered(module_name: str) -> bool:
    """Whether the user registered the module, or a package above it, for pickling by value."""
    listed = getattr(cloudpickle, "list_registry_pickle_by_value", None)
    if listed is None:
        return True  # cannot tell: never take a module by reference
    registry = listed()
    if not registry:
        return False
    parts = module_name.split(".")
    return any(".".join(parts[:n]) in registry for n in range(1, len(parts) + 1))


@functools.lru_cache(maxsize=1024)
def _names_in(code: types.CodeType) -> tuple[str, ...]:
    """The names ``code`` and the code nested in it look up (code objects are immutable)."""
    names = dict.fromkeys(code.co_names)
    for const in code.co_consts:
        if isinstance(const, types.CodeType):
            names.update(dict.fromkeys(_names_in(const)))
    return tuple(names)


class FunctionCache:
    """Shipped forms of functions by function object, each with its snapshot.

    ``get(fn, pack)`` returns what ``pack(fn)`` returned for ``fn`` the last
    time, when a fresh snapshot equals the one taken then; else calls ``pack``
    again. ``pack`` returns ``(value, local)``: the value to keep and the
    top-level modules it shipped by value (:func:`palm.wire.deps.pack`'s
    ``spec.local``). A value is kept only when the snapshots taken just before
    and just after ``pack`` agree (nothing changed while it ran). The
    environment variables named in ``env``, ``sys.path`` and the number of
    imported modules are part of the key: a dependency spec depends on them.
    """

    def __init__(self, size: int = 64, env: tuple[str, ...] = ("PALM_CHECK_DEPS",)) -> None:
        self.size = size
        self.env = env
        #: calls answered from the cache, and calls that pickled
        self.hits = 0
        self.misses = 0
        self._lock = threading.Lock()
        self._entries: OrderedDict[int, tuple[Any, ...]] = OrderedDict()

    def _key(self) -> tuple[Any, ...]:
        return (*(os.environ.get(name) for name in self.env), len(sys.modules), *sys.path)

    def get(self, fn: Any, pack: Callable[[Any], tuple[Any, tuple[str, ...]]]) -> Any:
        if not isinstance(fn, types.FunctionType):
            self.misses += 1
            return pack(fn)[0]
        key = self._key()
        with self._lock:
            entry = self._entries.get(id(fn))
        if entry is not None:
            ref, kept_key, local, kept, value = entry
            if ref() is fn and kept_key == key:
                fresh = snapshot(fn, local)
                if fresh is not None and same(kept, fresh):
                    self.hits += 1
                    return value
        self.misses += 1
        from palm.wire import deps

        guess = deps.discover(fn).local
        before = snapshot(fn, guess)
        value, local = pack(fn)
        after = snapshot(fn, local) if before is not None else None
        with self._lock:
            self._entries.pop(id(fn), None)
            if (
                after is not None
                and before is not None
                and local == guess
                and same(before, after)
                and self._key() == key
            ):
                self._entries[id(fn)] = (weakref.ref(fn), key, local, after, value)
                while len(self._entries) > self.size:
                    self._entries.popitem(last=False)
        return value
